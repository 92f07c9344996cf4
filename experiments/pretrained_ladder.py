"""Pretrained rungs: does fine-tuning a Pythia model on tiny Shakespeare reach 1.5 bits per byte?

    lm run experiments/pretrained_ladder.py --rung=pythia_70m
    lm archive rerun RECORD --rung=next       # the next Pythia model up the suite

Each rung starts from a pretrained model (`init_from`): the Pythia suite (EleutherAI), trained on
the same data in the same order at every size, is the canonical scaling ladder. The architecture
and tokenizer come from the model (GPT-NeoX: parallel residual, 25% rotary, exact GELU); the rung
fixes only the fine-tuning budget. Bits per byte uses the model's own tokenizer with exact byte
counts, so it is comparable across rungs and with the n-gram / compressor baselines
(`lm baselines`). The threshold is a guess to be calibrated by the first runs, not a published
number.

Needs the hub (or its cache): offline, a rung not in the huggingface_hub cache fails at once,
saying to pass a local directory, e.g. --config.init_from=/path/to/pythia-70m (a directory with
config.json, model.safetensors and tokenizer.json, as `huggingface-cli download` writes).
"""

from lm.config import base_config
from lm.experiment import apply_rung, ladder

SUITE = ("70m", "160m", "410m", "1b", "1.4b", "2.8b", "6.9b", "12b")


def get_config(arg=None):
    c = base_config()
    c.init_from = "hf:EleutherAI/pythia-70m"
    c.data.update(source="tinyshakespeare", tokenizer="hf")
    c.model.update(max_len=512, dropout=0.0)  # the rest comes from the pretrained model
    c.train.update(steps=200, batch_size=8, learning_rate=2e-5, warmup_steps=20, schedule="cosine",
                   weight_decay=0.0, eval_every=100, eval_batches=20, checkpoint_every=200,
                   sample_tokens=100, sample_prompt="ROMEO:")
    c.experiment.update(
        name="pretrained_ladder",
        hypothesis=("Pretrained Pythia models fine-tuned for 200 steps on tiny Shakespeare reach "
                    "1.5 bits per byte on its valid split, the larger ones first; the loss falls "
                    "smoothly with model size (same data, same order across the suite)."),
        metric="bits_per_byte", comparator="<=", threshold=1.5, split="valid")
    c.experiment.ladder = ladder(**{
        f"pythia_{size.replace('.', '_')}": {"init_from": f"hf:EleutherAI/pythia-{size}"}
        for size in SUITE})
    return apply_rung(c, arg)
