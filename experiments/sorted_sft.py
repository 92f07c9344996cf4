"""The base model for the DPO experiment: supervised fine-tuning on unsorted answers.

    lm train --config=experiments/sorted_sft.py --workdir=runs/sorted_sft

Each example is a prompt of 5 distinct letters ("Q: dbgai\nA: ") and an answer that is a random
permutation of them. Loss is on the answer only (data.source=sft packs examples with segment
ids). The model learns to answer with the prompt's letters in a random order, so it rarely
answers sorted (1 in 5! = 120): the property that experiments/dpo_sorted.py rewards. The best
possible answer loss is (ln 5 + ln 4 + ln 3 + ln 2) / 6 = 0.80 nats per token (the last letter
and the newline are forced).

Why these settings: with rope and batch 16 the model sat on the unigram plateau (loss 1.92,
letters drawn without looking at the prompt) for 400-2000 steps. Learned positions make "attend
to the prompt's letters, not to the ones already answered" a fixed positional pattern (examples
all have 18 tokens, so each packed slot sits at the same positions), and batch 32 gets off the
plateau by step ~150. Measured (1000 steps, 2-3 CPU minutes): answer loss 0.82; sampled at
temperature 1 on the 200 sort_5 eval prompts, 90.5% of the answers are permutations of the
prompt's letters and 0.5% are sorted (task:sort_5/sampled_valid, sampled_exact_match; the d0
record of dpo_sorted); greedy answers are never sorted.
"""

from lm.config import base_config


def get_config(arg=None):
    c = base_config()
    c.data.update(source="sft", path="synthetic:sorted", tokenizer="byte", document_masking=True,
                  train_tokens=160_000, eval_tokens=16_000)
    c.model.update(max_len=64, d_model=64, num_layers=2, num_heads=4, position="learned")
    c.train.update(steps=1000, batch_size=32, learning_rate=3e-3, warmup_steps=20, weight_decay=0.0,
                   log_every=50, eval_every=500, eval_batches=0, checkpoint_every=0, sample_tokens=0)
    c.evals.update(tasks="sort_5", num_examples=200, sample_temperature=1.0)  # what it answers
    c.experiment.update(
        name="sorted_sft",
        hypothesis=("A small model learns to answer with a permutation of the prompt's letters: "
                    "answer loss near the 0.80 of a uniformly random permutation, most sampled "
                    "answers permutations, about 1 in 120 sorted."),
        metric="loss", comparator="<=", threshold=1.0, split="valid")
    return c
