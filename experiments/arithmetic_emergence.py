"""Emergence: single-digit addition, learned from scratch in a mixed corpus of synthetic tasks.

    lm run experiments/arithmetic_emergence.py --rung=r0      # ~1 min on a 2-core CPU
    (the archived records ran with LM_CPU_DEVICES=1 on a heavily shared machine)
    lm archive rerun <id of the not_yet record> --rung=next

The corpus mixes solved examples of two tasks (lm/evals/tasks.py; data.source="tasks"):
addition ("7+8=15") and copying ("fba|fba"); each document holds 16 examples of one task.
At every eval the trainer runs the addition task (64 prompts from the eval stream, two solved
demonstrations before each, greedy generation) and logs exact match beside the answer's
negative log-likelihood (eval_task/addition_1/...). There are only 100 single-digit sums and
the training text holds them all, so this measures learning the table in the task's format,
not generalisation to unseen sums.

Exact match needs every answer digit and the stop right, so it stays low while
the answer NLL already falls, then rises steeply: the small rungs miss (not_yet), and the
archive's trend of the answer NLL against compute (the continuous surrogate of a task
criterion) predicts the rung that passes, before it runs.
"""

from lm.config import base_config
from lm.experiment import apply_rung, ladder


def get_config(arg=None):
    c = base_config()
    c.data.update(source="tasks", tasks="addition_1,copy_3", tokenizer="byte",
                  train_tokens=200_000, eval_tokens=10_000)
    c.model.update(max_len=32, d_model=64, num_layers=2, num_heads=4, dropout=0.0)
    # Constant learning rate after warmup: every eval past the burn-in is a point on the
    # run's loss curve for the archive's L(N, D) fit (a decayed schedule gives one per run).
    c.train.update(steps=200, batch_size=32, learning_rate=3e-3, warmup_steps=30, schedule="constant",
                   weight_decay=0.0, log_every=50, eval_every=100, eval_batches=4,
                   checkpoint_every=0, sample_tokens=0)
    c.evals.update(tasks="addition_1", num_examples=64, num_fewshot=2)
    c.experiment.update(
        name="arithmetic_emergence",
        hypothesis=("2-digit addition learned from a mixed corpus appears abruptly with compute: "
                    "exact match stays near zero while the answer's NLL falls smoothly, so the "
                    "NLL trend predicts the compute at which exact match reaches 0.9."),
        metric="task:addition_1/exact_match", comparator=">=", threshold=0.9, split="valid")
    c.experiment.ladder = ladder(
        r0={"model.d_model": 32, "train.steps": 200, "train.eval_every": 50},
        r1={"model.d_model": 48, "train.steps": 400, "train.eval_every": 100},
        r2={"model.d_model": 64, "train.steps": 800, "train.eval_every": 200},
        r3={"model.d_model": 64, "train.steps": 2000, "train.eval_every": 250},
        r4={"model.d_model": 96, "train.steps": 2000, "train.eval_every": 250},
    )
    return apply_rung(c, arg)
