"""Attention kernels at equal budget: exponential (softmax) vs RBF vs linear vs Performer.

    lm run experiments/attention_kernels.py --rung=tiny --set model.kernel=linear
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
    c.train.update(steps=300, batch_size=16, learning_rate=2e-3, warmup_steps=30,
                   log_every=50, eval_every=100, eval_batches=10, checkpoint_every=0,
                   sample_tokens=0)
    c.experiment.update(
        name="attention_kernels",
        hypothesis=("At equal parameters, data and steps, the kernel of attention matters little "
                    "for character-level language modelling: every kernel beats xz (2.95 bits/char) "
                    "on tiny Shakespeare; linear-time kernels may need more scale to get there."),
        metric="bits_per_byte", comparator="<=", threshold=2.9, split="valid")
    c.experiment.ladder = ladder(
        tiny={"train.steps": 150},
        small={"train.steps": 400},
        medium={"model.d_model": 128, "model.num_layers": 4, "train.steps": 1000},
    )
    return apply_rung(c, arg)
