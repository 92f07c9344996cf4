"""Quickstart: a small byte-level GPT on the embedded Python-stdlib corpus, on a laptop CPU.

    lm train --config=experiments/quickstart.py --workdir=/tmp/qs

The default rung ('small') trains a 4-layer, width-128, context-128 decoder for a couple of
minutes on a 2-core CPU (compile, evaluation and a sample at the end included); its loss
falls visibly and the sample looks like Python. It does not beat Lempel-Ziv: about 2.94 valid
bits/byte against gzip 1.89 and lzma 1.29 given the train split (printed beside the result);
experiments/beat_lz.py asks at which size and context a transformer does. 'tiny' is for tests, 'medium' for a GPU.
"""

from lm.config import base_config
from lm.experiment import apply_rung, ladder


def get_config(arg=None):
    config = base_config()
    config.seed = 0

    config.model.kind = "decoder"
    config.model.max_len = 128
    config.model.d_model = 128
    config.model.num_layers = 4
    config.model.num_heads = 4
    config.model.position = "learned"
    config.model.dropout = 0.0

    config.data.source = "stdlib"  # embedded: works offline on a fresh machine
    config.data.tokenizer = "byte"

    config.train.steps = 600
    config.train.batch_size = 16
    config.train.learning_rate = 3e-3
    config.train.warmup_steps = 50
    config.train.schedule = "cosine"
    config.train.weight_decay = 0.1
    config.train.log_every = 25
    config.train.eval_every = 200
    config.train.eval_batches = 8
    config.train.checkpoint_every = 200
    config.train.sample_tokens = 200
    config.train.sample_prompt = "def "

    config.mesh.data = -1

    e = config.experiment
    e.name = "quickstart"
    e.hypothesis = ("A small byte-level transformer trained for a few CPU minutes learns the "
                    "local structure of Python source: it beats a context-free byte model.")
    e.metric = "bits_per_byte"
    e.comparator = "<="
    e.threshold = 3.0  # measured: 2.93 valid bits/byte after 600 steps (a unigram byte model: ~5)
    e.split = "valid"
    e.ladder = ladder(
        tiny={"model.d_model": 32, "model.num_layers": 2, "model.num_heads": 2,
              "model.max_len": 32, "train.steps": 20, "train.batch_size": 8, "train.warmup_steps": 5,
              "train.log_every": 5, "train.eval_every": 10, "train.eval_batches": 2,
              "train.checkpoint_every": 10, "train.sample_tokens": 16},
        small={},
        medium={"model.d_model": 384, "model.num_layers": 6, "model.num_heads": 6,
                "model.max_len": 256, "train.steps": 5000, "train.batch_size": 64,
                "train.learning_rate": 1e-3, "train.warmup_steps": 200,
                "train.eval_every": 500, "train.eval_batches": 20,
                "train.checkpoint_every": 1000},
    )
    return apply_rung(config, arg or "small")
