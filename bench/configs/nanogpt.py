"""nanoGPT's two shakespeare_char configurations, for the CPU speed comparison.

    --config=bench/configs/nanogpt.py:baby    4 layers, 4 heads, width 128, context 64, batch 12
    --config=bench/configs/nanogpt.py:small   6 layers, 6 heads, width 384, context 256, batch 16

As in nanoGPT's config/train_shakespeare_char.py: no biases, tied embeddings, learned
positions, GELU MLP, AdamW (b2 0.99), gradient clipping 1.0; dropout 0.2 for `small` and 0.0
for the CPU `baby` run. The data is a 65-symbol source (an order-0 Markov chain: the vocabulary
of tiny Shakespeare's characters, without needing the file); the benchmark feeds synthetic
token batches of the same shape, so only the model's size matters.
"""

from bench.configs import from_rung

RUNGS = {
    "baby": dict(num_layers=4, num_heads=4, d_model=128, max_len=64, batch_size=12, dropout=0.0),
    "small": dict(num_layers=6, num_heads=6, d_model=384, max_len=256, batch_size=16, dropout=0.2),
}


def get_config(arg: str = "baby"):
    c = from_rung("bench/configs/nanogpt.py", RUNGS, arg, "baby", use_bias=False, dtype="float32",
                  data_source="markov", data_markov_vocab=65, data_markov_order=0,
                  data_train_tokens=20_000, data_eval_tokens=2_000, learning_rate=1e-3, b2=0.99,
                  grad_clip=1.0, steps=5000, warmup_steps=100)
    c.experiment.name = "bench_nanogpt"
    return c
