"""nanoGPT's shakespeare_char, as a ladder: does our trainer reproduce nanoGPT's numbers?

    lm run experiments/shakespeare_char.py --rung=nano     # ~1-2 min on a 2-core CPU
    lm run experiments/shakespeare_char.py --rung=baby     # nanoGPT's CPU config, ~10+ min
    lm run experiments/shakespeare_char.py --rung=gpu      # nanoGPT's GPU config (one GPU)

Character-level tiny Shakespeare (first 90% train, last 10% valid, as nanoGPT). The "baby"
rung is nanoGPT's CPU configuration (4 layers, 4 heads, width 128, context 64, batch 12, 2000
iterations, dropout 0, lr 1e-3) which reaches val loss about 1.88 nats/char; the "gpu" rung is
its GPU configuration (6/6/384, context 256, batch 64, 5000 iterations, dropout 0.2), which
reached 1.4697. The criterion is the baby result: valid loss <= 1.88. Expect nano and micro
to miss it with a falling loss (not_yet), baby to land near it, gpu to pass clearly.
The data file is found in data.data_dir / $LM_DATA_DIR / ~/.cache/lm, else downloaded.

    lm run experiments/shakespeare_char.py --rung=reproduce    # nanoGPT's baby run, its way
    lm run experiments/shakespeare_char.py --rung=modern       # same steps and parameters
    lm run experiments/shakespeare_char.py --rung=modern_1000  # the moonshot: half the steps

Reproduced to the digit (scripts/nanogpt_parity.py, torch + a nanoGPT checkout): nanoGPT's own
run (seed 1337, its README CPU command) ends at val 1.8857; the `reproduce` rung started from
the same initial weights and fed the same batches ends at 1.8839 (bench/results/
nanogpt_parity_seed1337.txt; a 30-step fixture of it is tests/test_nanogpt.py). With lm's own
init and windows (archived, val loss in nats/char, 200 fixed random batches): seeds 0 / 1 / 2
give 1.910 / 1.905 / 1.899 (nanoGPT seed 1338, 200 batches: 1.8972). Two noise sources set how
close "close" can be: the seed (spread about 0.006) and nanoGPT's 20-batch estimate itself
(seed-0 model: 40 draws of 20 random batches give 1.908 +- 0.0135, against 1.9106 on the whole
split and 1.9100 on the fixed 200). `modern` reaches 1.612 at 2000 steps and `modern_1000`
1.713 at 1000 (nanoGPT's 2000-step loss in half the steps). All of them stay above the
Kneser-Ney 6-gram of the same split (2.188 bits/char = 1.517 nats): the baselines are printed
beside every result and kept in record["baselines"].
"""

from lm.config import base_config
from lm.experiment import apply_rung, ladder


NANOGPT = {"model.init_scheme": "nanogpt", "train.decay_mask": "nanogpt",
           "data.sampling": "random_windows", "train.eval_batches": 200}
# nanoGPT's layers exactly: torch's erf GELU and LayerNorm eps (scripts/nanogpt_parity.py).
NANOGPT_LAYERS = {"model.mlp": "gelu_exact", "model.norm_eps": 1e-5}

MODERN_ARCH = {"model.position": "rope", "model.norm": "rmsnorm", "model.mlp": "swiglu"}
MODERN_SCHEDULE = {"train.schedule": "wsd", "train.cooldown_fraction": 0.3,
                   "train.min_lr_ratio": 0.0, "train.learning_rate": 2e-3}
MODERN = {**MODERN_ARCH, **MODERN_SCHEDULE, "train.optimizer": "muon",
          "train.muon_learning_rate": 0.02}


def get_config(arg=None):
    c = base_config()
    c.data.update(source="tinyshakespeare", tokenizer="char")
    # nanoGPT defaults: AdamW(0.9, 0.99), wd 0.1, clip 1, warmup 100, cosine to lr/10.
    c.model.update(max_len=64, d_model=128, num_layers=4, num_heads=4, dropout=0.0,
                   position="learned", norm="layernorm", mlp="gelu", use_bias=False)
    c.train.update(steps=2000, batch_size=12, learning_rate=1e-3, warmup_steps=100,
                   min_lr_ratio=0.1, weight_decay=0.1, b1=0.9, b2=0.99, grad_clip=1.0,
                   log_every=50, eval_every=250, eval_batches=20, checkpoint_every=1000,
                   sample_tokens=200, sample_prompt="\n")
    c.experiment.update(
        name="shakespeare_char",
        hypothesis=("Our decoder and trainer reproduce nanoGPT on character-level tiny Shakespeare: "
                    "the CPU baby configuration reaches valid loss 1.88 nats/char after 2000 steps "
                    "and the GPU configuration about 1.47."),
        metric="loss", comparator="<=", threshold=1.88, split="valid")
    c.experiment.ladder = ladder(
        nano={"model.num_layers": 2, "model.num_heads": 2, "model.d_model": 64,
              "train.steps": 300, "train.warmup_steps": 30},
        micro={"train.steps": 600, "train.warmup_steps": 60},
        baby={"train.steps": 2000},
        # nanoGPT's baby run in every respect that matters: its init (positions N(0, 0.02)),
        # its decay mask (every 2-D weight, embeddings included), random windows, and val loss
        # estimated as nanoGPT's estimate_loss does (eval_iters=200 random batches of 12).
        reproduce={"train.steps": 2000, **NANOGPT, **NANOGPT_LAYERS},
        # Same data, eval, steps and parameters (800,000 vs 804,096: rotary positions drop the
        # position table, SwiGLU's 344-wide MLP adds 1,024 a layer), what the field learned
        # since: rotary positions, RMSNorm, SwiGLU, warmup-stable-decay to 0, Muon on the block
        # matrices (AdamW at 2x nanoGPT's lr on embeddings and norms). Ablation:
        # experiments/nanogpt_ablation.py.
        modern={"train.steps": 2000, **NANOGPT, **MODERN},
        # Moonshot: nanoGPT's 2000-step loss in 1000 steps.
        modern_1000={"train.steps": 1000, **NANOGPT, **MODERN},
        gpu={"model.num_layers": 6, "model.num_heads": 6, "model.d_model": 384,
             "model.max_len": 256, "model.dropout": 0.2, "train.batch_size": 64,
             "train.steps": 5000, "train.eval_batches": 200, "train.eval_every": 500},
    )
    return apply_rung(c, arg)
