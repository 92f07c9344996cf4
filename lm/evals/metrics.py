"""Task metrics: pass/fail ones and the continuous ones beside them.

Exact match on a k-token answer behaves like p^k and jumps; the answer's log-likelihood and
per-token accuracy move smoothly with scale (Schaeffer et al. 2023), so every task reports both:

    exact_match         generated answer (greedy, cut at the stop string) == the reference
    accuracy            multiple choice: the highest-likelihood choice is the reference
    answer_nll          -sum log p(answer tokens | prompt), nats per example (teacher forcing)
    answer_bits         answer_nll / ln 2
    per_token_accuracy  fraction of answer tokens that are the argmax given the tokens before
    edit_distance       Levenshtein distance (characters) from the generated to the reference answer
    brier               multiple choice: sum over choices of (p_choice - [choice is gold])^2, with
                        p the likelihoods renormalised over the choices (0 perfect, 2 worst)

With evals.sample_temperature > 0 the answers are also sampled (seeded), which measures what the
model produces rather than what it ranks first (DPO can move one without the other):

    sampled_exact_match fraction of sampled answers equal to the reference
    sampled_valid       fraction of sampled answers the task calls well-formed (Task.valid;
                        sort: a permutation of the prompt's letters), right or wrong
"""

from __future__ import annotations

import math

import numpy as np

PASS_METRICS = ("exact_match", "accuracy")
CONTINUOUS = ("answer_nll", "answer_bits", "per_token_accuracy", "edit_distance", "brier")
SAMPLED = ("sampled_exact_match", "sampled_valid")
METRICS = PASS_METRICS + CONTINUOUS + SAMPLED


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: insertions, deletions and substitutions of characters."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def choice_probs(loglikelihoods) -> np.ndarray:
    """Softmax of summed choice log-likelihoods: probabilities renormalised over the choices."""
    x = np.asarray(loglikelihoods, np.float64)
    x = np.exp(x - x.max())
    return x / x.sum()


def brier(loglikelihoods, gold: int) -> float:
    p = choice_probs(loglikelihoods)
    onehot = np.zeros_like(p)
    onehot[gold] = 1.0
    return float(np.sum((p - onehot) ** 2))


def aggregate(answer_logprobs, answer_greedy, generated, answers, choice_lls=None, golds=None) -> dict:
    """Means over examples (per_token_accuracy over all answer tokens)."""
    nll = [-float(np.sum(lp, dtype=np.float64)) for lp in answer_logprobs]
    tokens = sum(len(g) for g in answer_greedy)
    out = {
        "exact_match": float(np.mean([g.strip() == a for g, a in zip(generated, answers)])),
        "answer_nll": float(np.mean(nll)),
        "answer_bits": float(np.mean(nll)) / math.log(2.0),
        "per_token_accuracy": float(sum(int(np.sum(g)) for g in answer_greedy)) / max(tokens, 1),
        "edit_distance": float(np.mean([edit_distance(g.strip(), a) for g, a in zip(generated, answers)])),
    }
    if choice_lls is not None:
        out["accuracy"] = float(np.mean([int(np.argmax(ll)) == g for ll, g in zip(choice_lls, golds)]))
        out["brier"] = float(np.mean([brier(ll, g) for ll, g in zip(choice_lls, golds)]))
    return out


def sampled(samples, answers, valid=None) -> dict:
    """Rates over sampled answers; sampled_valid only when the task has a validity check."""
    out = {"sampled_exact_match": float(np.mean([s.strip() == a for s, a in zip(samples, answers)]))}
    if valid is not None:
        out["sampled_valid"] = float(np.mean(valid))
    return out
