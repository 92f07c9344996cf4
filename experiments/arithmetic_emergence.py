"""Emergence: 2-digit addition, learned from scratch in a mixed corpus of synthetic tasks.

    lm run experiments/arithmetic_emergence.py --rung=r0      # ~1 min on a 2-core CPU
    lm archive rerun <id of the not_yet record> --rung=next

The corpus mixes solved examples of three tasks (lm/evals/tasks.py; data.source="tasks"):
2-digit addition ("47+85=132"), copying ("fbad|fbad") and modular arithmetic; each document
holds 16 examples of one task. At every eval the trainer runs the addition task (64 held-out
examples, two solved demonstrations before each prompt, greedy generation) and logs exact
match beside the answer's negative log-likelihood (eval_task/addition_2/...).

Exact match needs all three answer digits (and the stop) right, so it stays near zero while
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
    c.train.update(steps=200, batch_size=32, learning_rate=3e-3, warmup_steps=30,
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
        r0={"model.d_model": 32, "train.steps": 150},
        r1={"model.d_model": 48, "train.steps": 300},
        r2={"model.d_model": 64, "train.steps": 600},
        r3={"model.d_model": 64, "train.steps": 1200},
        r4={"model.d_model": 96, "train.steps": 2400},
    )
    return apply_rung(c, arg)
