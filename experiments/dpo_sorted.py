"""DPO does its job: preferring sorted answers moves a model that rarely sorts towards sorting.

    lm run experiments/dpo_sorted.py --rung=d3       # trains the SFT base once (cached), then DPO
    lm archive rerun <id of a not_yet record> --rung=next

The reference and starting point is experiments/sorted_sft.py (answers are random permutations
of the prompt's 5 letters, so about 1 in 120 is sorted). Each preference pair prefers the sorted
permutation over a random unsorted one. At step 0 the policy equals the reference: DPO loss
ln 2, held-out preference accuracy about chance. Criterion: held-out preference accuracy >= 0.9.
What the model generates is measured too, by sampling at temperature 1 (seeded) on 200 prompts
the pairs never use: task:sort_5/sampled_exact_match is the rate of sorted answers,
task:sort_5/sampled_valid the rate of answers that are permutations of the prompt's letters.

Rungs: d0 is the reference itself (one step at lr 0: ties count half), d1-d3 are 30, 100 and
300 steps. Archived (preference accuracy / sampled sorted / sampled permutations / greedy
sorted / KL): d0 0.50 / 0.5% / 90.5% / 0% / 0; d1 0.996 / 2% / 87% / 57% / 0.09; d2 0.998 /
18.5% / 52.5% / 87% / 0.60; d3 1.0 / 32% / 42.5% / 75.5% / 1.30 (chosen log-prob -4.85 -> -1.32,
rejected -4.92 -> -15.6). Preference accuracy is a sign test on the margin and every pair shares
the sorted-vs-unsorted direction: it is 0.99 after one step at lr 1e-4 (Adam's first step is the
gradient's sign) and 0.996 at 30 steps, while the sampled sorted rate is still 1-2%; the sampled
rate is what climbs with the steps.

Why these settings: at a pretraining-like lr (1e-3) Adam's first steps move every weight by ~lr
whatever the gradient, so the KL to the reference jumped to ~1 within 10 steps and the model learnt
to break unsorted answers (rejected log-prob -130, chosen -30: likelihood displacement), which
gives preference accuracy 1.0 while sampled answers stop being permutations, sorted ones included
(0%). At lr 1e-4 the KL grows smoothly (0.002, 0.03, 0.12 at steps 10, 20, 30). Sweep at lr 1e-4,
300 steps, sampled on 200 other held-out prompts (sorted / permutations / KL): beta 0.1: 27% / 29%
/ 2.7; beta 0.5: 30% / 42% / 1.3; beta 1.0: 27% / 54% / 0.8; beta 0.5 with label smoothing 0.05:
19% / 65% / 0.4; 600 steps at beta 0.5: 27%. The cost that remains: many sampled answers that are
not sorted are no longer permutations either (DPO pushes the rejected answers down more than it
pulls the chosen up).
"""

from lm.config import base_config
from lm.experiment import apply_rung, ladder


def get_config(arg=None):
    c = base_config()
    c.init_from = "experiment:experiments/sorted_sft.py"
    c.data.update(source="preference", path="synthetic:sorted", tokenizer="byte",
                  train_tokens=64_000, eval_tokens=8_000)
    c.model.update(max_len=64, d_model=64, num_layers=2, num_heads=4, position="learned")  # the base's
    c.train.update(objective="dpo", dpo_beta=0.5, steps=300, batch_size=16, learning_rate=1e-4,
                   warmup_steps=20, weight_decay=0.0, log_every=10, eval_every=100, eval_batches=0,
                   checkpoint_every=0, sample_tokens=0)
    c.evals.update(tasks="sort_5", num_examples=200, sample_temperature=1.0)  # what it generates
    c.experiment.update(
        name="dpo_sorted",
        hypothesis=("DPO on (sorted, unsorted) answer pairs teaches a model that rarely sorts to "
                    "prefer sorted answers: held-out preference accuracy rises from about 0.5 to "
                    ">= 0.9, and the rate of sorted answers among samples rises with it, from "
                    "about 1 in 120 to tens of percent."),
        metric="preference_accuracy", comparator=">=", threshold=0.9, split="valid")
    c.experiment.ladder = ladder(
        d0={"train.steps": 1, "train.learning_rate": 0.0, "train.eval_every": 1},  # the reference
        d1={"train.steps": 30, "train.eval_every": 30},
        d2={"train.steps": 100},
        d3={"train.steps": 300},
    )
    return apply_rung(c, arg)
