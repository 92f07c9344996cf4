"""DPO does its job: preferring sorted answers moves a model that rarely sorts towards sorting.

    lm run experiments/dpo_sorted.py --rung=d1       # trains the SFT base once (cached), then DPO
    lm archive rerun <id of a not_yet record> --rung=next

The reference and starting point is experiments/sorted_sft.py (answers are random permutations
of the prompt's 5 letters, so about 1 in 120 is sorted). Each preference pair prefers the sorted
permutation over a random unsorted one. At step 0 the policy equals the reference: DPO loss
ln 2, held-out preference accuracy 0.5. Criterion: held-out preference accuracy >= 0.9. The
task metric task:sort_letters/exact_match (greedy answers that are the sorted letters) shows
whether the property's frequency in generations rises with it.
"""

from lm.config import base_config
from lm.experiment import apply_rung, ladder


def get_config(arg=None):
    c = base_config()
    c.init_from = "experiment:experiments/sorted_sft.py"
    c.data.update(source="preference", path="synthetic:sorted", tokenizer="byte",
                  train_tokens=64_000, eval_tokens=8_000)
    c.model.update(max_len=64, d_model=64, num_layers=2, num_heads=4, position="rope")
    c.train.update(objective="dpo", dpo_beta=0.1, steps=100, batch_size=16, learning_rate=5e-4,
                   warmup_steps=5, weight_decay=0.0, log_every=10, eval_every=20, eval_batches=0,
                   checkpoint_every=0, sample_tokens=0)
    c.evals.update(tasks="sort_5", num_examples=100)  # greedy answers that come out sorted
    c.experiment.update(
        name="dpo_sorted",
        hypothesis=("DPO on (sorted, unsorted) answer pairs teaches a model that rarely sorts to "
                    "prefer sorted answers: held-out preference accuracy rises from 0.5 to >= 0.9."),
        metric="preference_accuracy", comparator=">=", threshold=0.9, split="valid")
    c.experiment.ladder = ladder(
        d0={"train.steps": 1},
        d1={"train.steps": 20},
        d2={"train.steps": 100},
    )
    return apply_rung(c, arg)
