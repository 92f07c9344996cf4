"""Run synthetic tasks on an Evaluator: the metrics of lm/evals/metrics.py per task.

    run_tasks(ev, "addition_3,copy_8", num_examples=64, num_fewshot=2, seed=0)
      -> {"addition_3": {"exact_match": ..., "answer_nll": ..., ...}, "copy_8": {...}}
    flat(results) -> {"task/addition_3/exact_match": ..., ...}   (the trainer logs these as eval_task/...)

Per task: one batched loglikelihood pass over (prompt, answer) pairs (answer NLL, per-token
accuracy), one greedy generate_until pass (exact match, edit distance), and for multiple
choice one loglikelihood pass over every (prompt, choice) pair (accuracy, Brier). With
sample_temperature > 0, one more generate_until pass sampled at that temperature, seeded by
`seed` (sampled exact match, sampled validity): deterministic for a seed and batch size.
"""

from __future__ import annotations

from lm.evals import metrics, tasks as tasks_lib


def evaluate_task(ev, task, *, num_examples: int, num_fewshot: int = 0, seed: int = 0,
                  sample_temperature: float = 0.0) -> dict:
    """Metrics of one task (a Task or its name) on `num_examples` examples."""
    task = tasks_lib.get_task(task) if isinstance(task, str) else task
    if num_examples < 1:
        raise ValueError(f"num_examples must be >= 1, got {num_examples}")
    if num_fewshot < 0:
        raise ValueError(f"num_fewshot must be >= 0, got {num_fewshot}")
    if sample_temperature < 0:
        raise ValueError(f"sample_temperature must be >= 0 (0: no sampled pass), got {sample_temperature}")
    examples = task.eval_set(num_examples, num_fewshot=num_fewshot, seed=seed)
    try:
        scored = ev.score_tokens([ev.encode_pair(e.prompt, e.answer) for e in examples])
        max_gen = max(len(ev.encode(e.answer + tasks_lib.STOP)) for e in examples)
        generated = ev.generate_until(
            [(e.prompt, {"until": [tasks_lib.STOP], "max_gen_toks": max_gen}) for e in examples])
        choice_lls = golds = None
        if task.multiple_choice:
            pairs = [(e.prompt, c) for e in examples for c in e.choices]
            lls = [ll for ll, _ in ev.loglikelihood(pairs)]
            choice_lls, k = [], 0
            for e in examples:
                choice_lls.append(lls[k:k + len(e.choices)])
                k += len(e.choices)
            golds = [e.gold for e in examples]
        if sample_temperature > 0:
            samples = ev.generate_until(
                [(e.prompt, {"until": [tasks_lib.STOP], "max_gen_toks": max_gen,
                             "temperature": sample_temperature, "seed": seed}) for e in examples])
    except ValueError as e:
        raise ValueError(f"task {task.name} (num_fewshot={num_fewshot}): {e}") from None
    out = metrics.aggregate([s.logprobs for s in scored], [s.greedy for s in scored], generated,
                            [e.answer for e in examples], choice_lls, golds)
    if sample_temperature > 0:
        check = getattr(task, "valid", None)  # tasks of other kinds (tests) may have none
        valid = [check(e, s) for e, s in zip(examples, samples)] if check else None
        out.update(metrics.sampled(samples, [e.answer for e in examples], valid))
    out["pass_metric"] = task.pass_metric
    out["num_examples"] = len(examples)
    return out


def run_tasks(ev, names, *, num_examples: int, num_fewshot: int = 0, seed: int = 0,
              sample_temperature: float = 0.0) -> dict:
    return {t: evaluate_task(ev, t, num_examples=num_examples, num_fewshot=num_fewshot, seed=seed,
                             sample_temperature=sample_temperature)
            for t in tasks_lib.parse_tasks(names)}


def flat(results: dict) -> dict:
    """{task: {metric: v}} -> {"task/<task>/<metric>": v} (numbers only)."""
    return {f"task/{t}/{m}": v for t, ms in results.items() for m, v in ms.items()
            if isinstance(v, (int, float)) and m in metrics.METRICS}
