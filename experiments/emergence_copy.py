"""Emergence: in-context copying appears abruptly as compute grows.

    lm run experiments/emergence_copy.py --rung=r0      # ~1 min on a 2-core CPU
    lm archive rerun <id of the not_yet record> --rung=next

Each example is 8 random symbols (of 16), a separator, then the same 8 symbols again; only
the second copy is scored. A model can only get it right by looking back at the first copy
(an induction/positional-copy circuit), so accuracy sits near chance (1/16) until the
circuit forms, then jumps towards 1. Expect the smallest rungs to miss the criterion
(accuracy >= 0.9) with a falling loss, so they are archived "not yet"; the trend of the
loss (the continuous surrogate) predicts the compute where the criterion is met, and a
larger rung, a few CPU minutes, meets it.
"""

from lm.config import base_config
from lm.experiment import apply_rung, ladder


def get_config(arg=None):
    c = base_config()
    c.data.update(source="copy", tokenizer="byte", copy_vocab=16, copy_prefix_len=8)
    c.model.update(max_len=16, d_model=32, num_layers=2, num_heads=2, dropout=0.0)
    c.train.update(steps=100, batch_size=32, learning_rate=3e-3, warmup_steps=20,
                   weight_decay=0.0, log_every=25, eval_every=50, eval_batches=8,
                   checkpoint_every=0, sample_tokens=0)
    c.experiment.update(
        name="emergence_copy",
        hypothesis=("A small transformer learns to copy an 8-symbol sequence in context, but only "
                    "past a compute threshold: below it accuracy on the copy stays near chance "
                    "while the loss already falls, so the loss trend predicts where it will pass."),
        metric="accuracy", comparator=">=", threshold=0.9, split="valid")
    c.experiment.ladder = ladder(
        r0={"model.d_model": 16, "model.num_layers": 1, "train.steps": 60},
        r1={"model.d_model": 32, "model.num_layers": 2, "train.steps": 60},
        r2={"model.d_model": 32, "model.num_layers": 2, "train.steps": 120},
        r3={"model.d_model": 32, "model.num_layers": 2, "train.steps": 300},
        r4={"model.d_model": 64, "model.num_layers": 2, "train.steps": 600},
    )
    return apply_rung(c, arg)
