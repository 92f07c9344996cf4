"""The base model for the DPO experiment: supervised fine-tuning on unsorted answers.

    lm train --config=experiments/sorted_sft.py --workdir=runs/sorted_sft

Each example is a prompt of 5 distinct letters ("Q: dbgai\nA: ") and an answer that is a random
permutation of them. Loss is on the answer only (data.source=sft packs examples with segment
ids). The model learns to answer with the prompt's letters in a random order, so it rarely
answers sorted (1 in 5! = 120): the property that experiments/dpo_sorted.py rewards.
"""

from lm.config import base_config


def get_config(arg=None):
    c = base_config()
    c.data.update(source="sft", path="synthetic:sorted", tokenizer="byte", document_masking=True,
                  train_tokens=160_000, eval_tokens=16_000)
    c.model.update(max_len=64, d_model=64, num_layers=2, num_heads=4, position="rope")
    c.train.update(steps=400, batch_size=16, learning_rate=3e-3, warmup_steps=20, weight_decay=0.0,
                   log_every=50, eval_every=200, eval_batches=0, checkpoint_every=0, sample_tokens=0)
    c.experiment.update(
        name="sorted_sft",
        hypothesis="A small model learns to answer with a permutation of the prompt's letters.",
        metric="loss", comparator="<=", threshold=1.0, split="valid")
    return c
