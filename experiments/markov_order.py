"""A transformer against the exact entropy rate of a k-th order Markov source.

    lm run experiments/markov_order.py --rung=ctx2      # context shorter than k: ~1 min
    lm run experiments/markov_order.py --rung=small     # context 32 >> k: ~1-2 min

The source is a 3rd-order chain over 4 symbols with Dirichlet(0.5) transitions; its entropy
rate H (bits/symbol) is exact. A model that sees the last k=3 symbols can reach H, one with a
shorter context cannot (the gap is H(X|2 previous) - H(X|3 previous) whatever its size).
Criterion: valid excess_bits_per_byte = bits/symbol - H <= 0.05 (positions at the start of a
window, with less than k symbols of context, are part of the average and cost a little).
Expect ctx2 to miss by a wide margin, tiny to come close, small to pass.
"""

from lm.config import base_config
from lm.experiment import apply_rung, ladder


def get_config(arg=None):
    c = base_config()
    c.data.update(source="markov", markov_order=3, markov_vocab=4, markov_concentration=0.5,
                  train_tokens=500_000, eval_tokens=50_000)
    c.model.update(max_len=32, d_model=32, num_layers=2, num_heads=2, dropout=0.0)
    c.train.update(steps=300, batch_size=32, learning_rate=3e-3, warmup_steps=30,
                   weight_decay=0.0, log_every=50, eval_every=100, eval_batches=10,
                   checkpoint_every=0, sample_tokens=0)
    c.experiment.update(
        name="markov_order",
        hypothesis=("With a context longer than the source's order k, a small transformer reaches "
                    "the exact entropy rate of a k-th order Markov source within 0.05 bits/symbol; "
                    "with a shorter context it cannot, at any size."),
        metric="excess_bits_per_byte", comparator="<=", threshold=0.05, split="valid",
        min_context=4)  # k = 3 previous symbols + the one predicted: ctx2 cannot
    c.experiment.ladder = ladder(
        ctx2={"model.max_len": 2, "train.steps": 300},
        tiny={"model.max_len": 32, "model.d_model": 32, "train.steps": 150},
        small={"model.max_len": 32, "model.d_model": 64, "train.steps": 400},
        medium={"model.max_len": 64, "model.d_model": 128, "model.num_layers": 4, "train.steps": 1000},
    )
    return apply_rung(c, arg)
