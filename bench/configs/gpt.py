"""GPT-2-style configurations of about 124M, 350M and 1B parameters, bf16, for accelerators.

    --config=bench/configs/gpt.py:124m   12 layers, 12 heads, width  768, context 1024, batch 16
    --config=bench/configs/gpt.py:350m   24 layers, 16 heads, width 1024, context 1024, batch 16
    --config=bench/configs/gpt.py:1b     20 layers, 16 heads, width 2048, context 2048, batch 8

GPT-2 shapes (biases, tied embeddings, learned positions, GELU) with the vocabulary padded to
50304 (a multiple of 128). Compute in bfloat16, parameters and optimizer state in float32.
Layers are scanned (flat compile time); the 1B model rematerialises all but the matmuls
(remat=dots) to fit activations at context 2048. Batches are per step (global); shrink
train.batch_size on smaller devices. The data is an order-0 Markov source over 50304 symbols
(the benchmark feeds synthetic batches; only the vocabulary size matters, and each split holds
several sequences of the longest context: one needs max_len + 1 tokens).
"""

from bench.configs import from_rung

RUNGS = {
    "124m": dict(num_layers=12, num_heads=12, d_model=768, max_len=1024, batch_size=16, remat="none"),
    "350m": dict(num_layers=24, num_heads=16, d_model=1024, max_len=1024, batch_size=16, remat="none"),
    "1b": dict(num_layers=20, num_heads=16, d_model=2048, max_len=2048, batch_size=8, remat="dots"),
}


def get_config(arg: str = "124m"):
    c = from_rung("bench/configs/gpt.py", RUNGS, arg, "124m", dtype="bfloat16", scan_layers=True,
                  dropout=0.0, data_source="markov", data_markov_vocab=50304, data_markov_order=0,
                  data_train_tokens=16384, data_eval_tokens=8192, learning_rate=6e-4, b2=0.95,
                  grad_clip=1.0, steps=10000, warmup_steps=200)
    c.experiment.name = "bench_gpt"
    return c
