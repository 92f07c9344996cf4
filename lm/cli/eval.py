"""`lm eval --workdir=DIR [--split=valid|test] [--checkpoint=STEP] [--max_batches=N] [--baselines]`
`lm eval --workdir=DIR --tasks=addition_3,copy_8 [--num_fewshot=K] [--limit=N] [--seed=S] [--temperature=T]`
`lm eval --workdir=DIR --harness_tasks=NAME[,NAME] [--include_path=DIR] [--num_fewshot=K] [--limit=N]
    [--table] [--output_path=DIR]`

Evaluates a trained workdir on a split and prints one JSON object: loss (nats/token),
bits_per_byte, perplexity, tokens and bytes evaluated (plus the n-gram and compressor
baselines on the same split with --baselines). Works for both model kinds.

With --tasks (built-in synthetic tasks, lm/evals/tasks.py) or --harness_tasks
(lm-evaluation-harness tasks, needs the `eval` extra) it prints the task results instead:
{"workdir", "checkpoint", "tasks": {task: {metric: value}}} / "harness": the harness's results.
--table prints lm-eval's own results table (lm_eval.utils.make_table) instead of the JSON;
--output_path=DIR writes lm-eval's results file (DIR/<model>/results_<timestamp>.json, its
schema, by its own EvaluationTracker), so the numbers go straight into lm-eval's tools.
"""

import json

from absl import flags

from lm.cli._errors import one_line_errors

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir (holds checkpoints/ and config).")
_SPLIT = flags.DEFINE_string("split", "valid", "Split to evaluate: valid or test.")
_CHECKPOINT = flags.DEFINE_integer("checkpoint", None, "Checkpoint step; default the latest.")
_MAX_BATCHES = flags.DEFINE_integer("max_batches", 0, "Evaluate at most N batches (0: the whole split).")
_BASELINES = flags.DEFINE_bool("baselines", False, "Add n-gram and compressor baselines.")
_ORDERS = flags.DEFINE_string("orders", "0..8", "n-gram orders for --baselines.")
_TASKS = flags.DEFINE_string("tasks", "", "Comma-separated built-in tasks, e.g. addition_3,copy_8.")
_HARNESS = flags.DEFINE_string("harness_tasks", "", "Comma-separated lm-evaluation-harness tasks.")
_INCLUDE = flags.DEFINE_string("include_path", "", "Directory of extra harness task YAMLs.")
_FEWSHOT = flags.DEFINE_integer("num_fewshot", 0, "Solved demonstrations before each prompt.")
_LIMIT = flags.DEFINE_integer("limit", 64, "Examples per task (harness: at most this many; 0 all).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the built-in tasks' examples (and samples).")
_TABLE = flags.DEFINE_bool("table", False, "--harness_tasks: print lm-eval's results table, not JSON.")
_OUTPUT = flags.DEFINE_string("output_path", "", "--harness_tasks: write lm-eval's results JSON under DIR.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.0, "> 0: also sample answers (sampled_* metrics).")


def _tasks(step):
    from lm.evals import runner, tasks
    from lm.evals.api import Evaluator

    if _LIMIT.value < 1:
        raise ValueError(f"--limit={_LIMIT.value}: built-in tasks need at least 1 example")
    ev = Evaluator.from_workdir(_WORKDIR.value, step=step)
    return runner.run_tasks(ev, _TASKS.value, num_examples=_LIMIT.value, num_fewshot=_FEWSHOT.value,
                            seed=_SEED.value, sample_temperature=_TEMPERATURE.value), ev.step


@one_line_errors("eval")
def main(argv):
    from lm import checkpoint, evaluation, runs
    from lm.evals import tasks

    tasks.parse_tasks(_TASKS.value)  # a clear error before touching the workdir
    if _MAX_BATCHES.value < 0:
        raise ValueError(f"--max_batches={_MAX_BATCHES.value}: must be >= 0 (0: the whole split)")
    if (_TABLE.value or _OUTPUT.value) and not _HARNESS.value:
        raise ValueError("--table and --output_path go with --harness_tasks (lm-eval's results)")
    checkpoint.checkpoint_step(_WORKDIR.value, _CHECKPOINT.value)  # a clear error if none
    if _TASKS.value or _HARNESS.value:
        out = {"workdir": _WORKDIR.value, "checkpoint": None, "num_fewshot": _FEWSHOT.value}
        if _TASKS.value:
            out["tasks"], out["checkpoint"] = _tasks(_CHECKPOINT.value)
        if _HARNESS.value:
            from lm.evals import harness

            full = harness.run(_WORKDIR.value, _HARNESS.value, step=_CHECKPOINT.value,
                               include_path=_INCLUDE.value or None, num_fewshot=_FEWSHOT.value,
                               limit=_LIMIT.value or None, full=True, output_path=_OUTPUT.value or None)
            out["harness"] = full["results"]
            if _TABLE.value:
                from lm_eval.utils import make_table

                print(make_table(full) + (make_table(full, "groups") if "groups" in full else ""))
                if not _TASKS.value:
                    return
        print(json.dumps(out, default=str))
        return
    run, state = runs.load_run(_WORKDIR.value, step=_CHECKPOINT.value)  # None: newest good
    config, model, params, dataset = run.config, run.model, runs.eval_params(state), run.dataset
    step = run.restored_step
    if _SPLIT.value not in dataset.splits:
        raise ValueError(f"--split={_SPLIT.value!r}: the dataset has splits {list(dataset.splits)}")
    metrics = evaluation.evaluate(params, model=model, dataset=dataset, config=config, split=_SPLIT.value,
                               max_batches=_MAX_BATCHES.value)
    out = {"workdir": _WORKDIR.value, "split": _SPLIT.value, "checkpoint": step,
           "model": config.model.kind}
    out.update({k: (v.item() if hasattr(v, "item") else v) for k, v in metrics.items()})
    if _BASELINES.value:
        from lm import baselines

        result = baselines.dataset_baselines(dataset, baselines.parse_orders(_ORDERS.value), _SPLIT.value)
        out["baselines"] = {
            "ngram": {r["order"]: r["bits_per_byte"] for r in result["ngram"]},
            "compressors": {r["compressor"]: r["bits_per_byte"] for r in result.get("compressors", [])},
            "note": baselines.context_line(result["context"], _SPLIT.value),
        }
    print(json.dumps(out, default=str))
