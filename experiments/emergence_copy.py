"""Emergence: in-context copying appears abruptly as compute grows.

    lm run experiments/emergence_copy.py --rung=w16     # then w24, w32, w48 (~4 CPU min in all)
    lm archive rerun <id of the not_yet record> --rung=next

Each example is 8 random symbols (of 16), a separator, then the same 8 symbols again; only
the second copy is scored. A model can only get it right by looking back at the first copy
(an induction/positional-copy circuit), so accuracy sits near chance (1/16) until the
circuit forms, then jumps towards 1. Expect the smallest rungs to miss the criterion
(accuracy >= 0.9) with a falling loss, so they are archived "not yet"; the trend of the
loss (the continuous surrogate) predicts the compute where the criterion is met, and a
larger rung, a few CPU minutes, meets it.

The ladder grows width 16 -> 48 (non-embedding N 6.6k -> 57k) at a fixed 5 tokens per
parameter, constant learning rate after warmup, 8 evaluations a run: the L(N, D) fit uses
every evaluation past 15% of each run (lm/scaling). The accuracy jump happens within a run
(the old r3 rung went 0.65 -> 0.999 between steps 100 and 150), which a loss trend cannot
foresee: the archive then says "unpredictable (phase change)" instead of a number.
"""

from lm.config import base_config
from lm.experiment import apply_rung, ladder


def get_config(arg=None):
    c = base_config()
    c.data.update(source="copy", tokenizer="byte", copy_vocab=16, copy_prefix_len=8)
    c.model.update(max_len=16, d_model=32, num_layers=2, num_heads=2, dropout=0.0)
    c.train.update(steps=100, batch_size=32, learning_rate=3e-3, warmup_steps=20, schedule="constant",
                   weight_decay=0.0, log_every=25, eval_every=50, eval_batches=8,
                   checkpoint_every=0, sample_tokens=0)
    c.experiment.update(
        name="emergence_copy",
        hypothesis=("A small transformer learns to copy an 8-symbol sequence in context, but only "
                    "past a compute threshold: below it accuracy on the copy stays near chance "
                    "while the loss already falls, so the loss trend predicts where it will pass."),
        metric="accuracy", comparator=">=", threshold=0.9, split="valid")

    def rung(d, tokens_per_param=5):
        n = 24 * d * d + 28 * d  # non-embedding parameters of this 2-layer model (lm.models)
        steps = int(round(tokens_per_param * n / (32 * 16)))
        return {"model.d_model": d, "train.steps": steps, "train.eval_every": max(steps // 8, 5)}

    c.experiment.ladder = ladder(w16=rung(16), w24=rung(24), w32=rung(32), w48=rung(48))
    return apply_rung(c, arg)
