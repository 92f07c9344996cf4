"""Attention kernels at equal budget: exponential (softmax) vs RBF vs linear vs Performer.

    lm run experiments/attention_kernels.py --rung=w16      # then w24, w32, w40, w48 (~8 CPU min)
    lm archive rerun <w48 record id> --rung=next            # w64, with the prediction stored first
    lm run experiments/attention_kernels.py --rung=w16 --set model.kernel=linear
    lm archive report     # one series per kernel (the --set is the variant)

Attention is a Nadaraya-Watson kernel smoother; the kernel is the only thing that changes
(model.kernel = exp | rbf | linear | performer), on the same data (character-level tiny
Shakespeare), model size, steps and seed. Criterion: valid bits_per_byte <= 2.9 (xz -9e's
2.95 bits/char on the same split, a little better). Expect exp and rbf (which is softmax plus
a per-key bias) to be close and to pass first; linear and performer to trail at equal steps,
archived "not yet" if their loss still falls with scale, "failed" if it flattens above.
"""

from lm.config import base_config
from lm.experiment import apply_rung, ladder


def get_config(arg=None):
    c = base_config()
    c.data.update(source="tinyshakespeare", tokenizer="char")
    c.model.update(kernel="exp", max_len=64, d_model=64, num_layers=2, num_heads=4,
                   performer_features=64, dropout=0.0)
    c.train.update(steps=300, batch_size=16, learning_rate=2e-3, warmup_steps=20, schedule="constant",
                   log_every=50, eval_every=100, eval_batches=10, checkpoint_every=0,
                   sample_tokens=0)
    c.experiment.update(
        name="attention_kernels",
        hypothesis=("At equal parameters, data and steps, the kernel of attention matters little "
                    "for character-level language modelling: every kernel beats xz (2.95 bits/char) "
                    "on tiny Shakespeare; linear-time kernels may need more scale to get there."),
        metric="bits_per_byte", comparator="<=", threshold=2.9, split="valid")

    def rung(d, tokens_per_param=20):
        # N ~ 12 L d^2 non-embedding parameters; D = tokens_per_param * N (16 x 64 tokens a step)
        steps = int(round(tokens_per_param * 12 * 2 * d * d / (16 * 64)))
        return {"model.d_model": d, "train.steps": steps, "train.eval_every": max(steps // 8, 5)}

    # Width grows at a fixed 20 tokens per parameter with a constant learning rate (after
    # warmup), so L(N, D) fits (lm/scaling) can use every evaluation past 15% of each run.
    c.experiment.ladder = ladder(w16=rung(16), w24=rung(24), w32=rung(32), w40=rung(40),
                                 w48=rung(48), w64=rung(64))
    return apply_rung(c, arg)
