"""GPT-2-style configurations of about 124M, 350M and 1B parameters, bf16, for accelerators.

    --config=bench/configs/gpt.py:124m   12 layers, 12 heads, width  768, context 1024, batch 16
    --config=bench/configs/gpt.py:350m   24 layers, 16 heads, width 1024, context 1024, batch 16
    --config=bench/configs/gpt.py:1b     20 layers, 16 heads, width 2048, context 2048, batch 8

GPT-2 shapes (biases, tied embeddings, learned positions, GELU) with the vocabulary padded to
50304 (a multiple of 128). Compute in bfloat16, parameters and optimizer state in float32.
Layers are scanned (flat compile time); the 1B model rematerialises all but the matmuls
(remat=dots) to fit activations at context 2048. Batches are per step (global); shrink
train.batch_size on smaller devices. The data is an order-0 Markov source over 50304 symbols
(the benchmark feeds synthetic batches; only the vocabulary size matters).
"""

from lm.config import base_config

RUNGS = {
    "124m": dict(num_layers=12, num_heads=12, d_model=768, max_len=1024, batch_size=16, remat="none"),
    "350m": dict(num_layers=24, num_heads=16, d_model=1024, max_len=1024, batch_size=16, remat="none"),
    "1b": dict(num_layers=20, num_heads=16, d_model=2048, max_len=2048, batch_size=8, remat="dots"),
}


def get_config(arg: str = "124m"):
    arg = arg or "124m"
    if arg not in RUNGS:
        raise ValueError(f"bench/configs/gpt.py: unknown rung {arg!r}; choose from {sorted(RUNGS)}")
    r = RUNGS[arg]
    c = base_config()
    c.model.num_layers, c.model.num_heads, c.model.d_model = r["num_layers"], r["num_heads"], r["d_model"]
    c.model.max_len, c.model.remat = r["max_len"], r["remat"]
    c.model.dtype, c.model.scan_layers, c.model.dropout = "bfloat16", True, 0.0
    c.data.source, c.data.markov_vocab, c.data.markov_order = "markov", 50304, 0
    c.data.train_tokens, c.data.eval_tokens = 8192, 2048
    c.train.batch_size = r["batch_size"]
    c.train.learning_rate, c.train.b2, c.train.grad_clip = 6e-4, 0.95, 1.0
    c.train.steps, c.train.warmup_steps = 10000, 200
    c.experiment.name, c.experiment.rung = "bench_gpt", arg
    return c
