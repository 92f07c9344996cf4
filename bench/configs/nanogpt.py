"""nanoGPT's two shakespeare_char configurations, for the CPU speed comparison.

    --config=bench/configs/nanogpt.py:baby    4 layers, 4 heads, width 128, context 64, batch 12
    --config=bench/configs/nanogpt.py:small   6 layers, 6 heads, width 384, context 256, batch 16

As in nanoGPT's config/train_shakespeare_char.py: no biases, tied embeddings, learned
positions, GELU MLP, AdamW (b2 0.99), gradient clipping 1.0; dropout 0.2 for `small` and 0.0
for the CPU `baby` run. The data is a 65-symbol source (an order-0 Markov chain: the vocabulary
of tiny Shakespeare's characters, without needing the file); the benchmark feeds synthetic
token batches of the same shape, so only the model's size matters.
"""

from lm.config import base_config

RUNGS = {
    "baby": dict(num_layers=4, num_heads=4, d_model=128, max_len=64, batch_size=12, dropout=0.0),
    "small": dict(num_layers=6, num_heads=6, d_model=384, max_len=256, batch_size=16, dropout=0.2),
}


def get_config(arg: str = "baby"):
    arg = arg or "baby"
    if arg not in RUNGS:
        raise ValueError(f"bench/configs/nanogpt.py: unknown rung {arg!r}; choose from {sorted(RUNGS)}")
    r = RUNGS[arg]
    c = base_config()
    c.model.num_layers, c.model.num_heads, c.model.d_model = r["num_layers"], r["num_heads"], r["d_model"]
    c.model.max_len, c.model.dropout = r["max_len"], r["dropout"]
    c.model.use_bias = False
    c.model.dtype = "float32"
    c.data.source, c.data.markov_vocab, c.data.markov_order = "markov", 65, 0
    c.data.train_tokens, c.data.eval_tokens = 20_000, 2_000
    c.train.batch_size = r["batch_size"]
    c.train.learning_rate, c.train.b2, c.train.grad_clip = 1e-3, 0.99, 1.0
    c.train.steps, c.train.warmup_steps = 5000, 100
    c.experiment.name, c.experiment.rung = "bench_nanogpt", arg
    return c
