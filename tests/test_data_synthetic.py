"""Synthetic sources: the Markov entropy rate is exact; the stream follows the table."""

import numpy as np
import pytest

from lm.data import build_dataset, data_config
from lm.data import synthetic


def full_context_matrix(table, V, k):
    """The V^k x V^k transition matrix of the context chain, built the slow obvious way."""
    S = V ** k
    M = np.zeros((S, S))
    for s in range(S):
        for y in range(V):
            M[s, (s * V + y) % S] += table[s, y]
    return M


@pytest.mark.parametrize("V,k", [(3, 1), (4, 2), (2, 3)])
def test_stationary_distribution_is_stationary(V, k):
    table = synthetic.markov_table(V, k, 0.5, seed=1)
    pi = synthetic.stationary_distribution(table)
    np.testing.assert_allclose(pi @ full_context_matrix(table, V, k), pi, atol=1e-10)
    assert pi.sum() == pytest.approx(1.0)


def test_entropy_rate_special_cases():
    assert synthetic.markov_entropy_rate(np.full((9, 3), 1 / 3)) == pytest.approx(np.log2(3))
    p = np.array([[0.5, 0.25, 0.25]])
    assert synthetic.markov_entropy_rate(p) == pytest.approx(1.5)  # order 0: plain entropy
    # first order, two states: H = pi_0 h(a) + pi_1 h(b) with pi_0 = b / (a + b)
    a, b = 0.1, 0.3
    table = np.array([[1 - a, a], [b, 1 - b]])
    h = lambda q: -(q * np.log2(q) + (1 - q) * np.log2(1 - q))
    assert synthetic.markov_entropy_rate(table) == pytest.approx((b * h(a) + a * h(b)) / (a + b))


def test_empirical_log_loss_converges_to_entropy_rate():
    c = data_config(source="markov", markov_order=2, markov_vocab=5, markov_concentration=0.3,
                    train_tokens=400_000, eval_tokens=20_000)
    ds = build_dataset(c, 64)
    table = ds.markov_table
    assert ds.entropy_rate == synthetic.markov_entropy_rate(table)
    assert ds.vocab_size == 5 and (ds.tokenizer.token_bytes == 1).all()
    tokens, doc_ids = ds.tokens("train"), ds._packed["train"].doc_ids
    errors = []
    for n in (4_000, 400_000):
        loss = synthetic.markov_log_loss(table, 2, tokens[:n], doc_ids[:n])
        errors.append(abs(loss - ds.entropy_rate))
    assert errors[1] < 0.01 < ds.entropy_rate  # standard error at 4e5 symbols is ~0.002
    assert errors[1] < errors[0] + 0.005
    # a wrong table does worse: the stream really follows this table
    other = synthetic.markov_table(5, 2, 0.3, seed=99)
    assert synthetic.markov_log_loss(other, 2, tokens, doc_ids) > ds.entropy_rate + 0.1


def test_markov_deterministic_from_seeds():
    c = data_config(source="markov", train_tokens=20_000, eval_tokens=5_000)
    a, b = build_dataset(c, 32, seed=0), build_dataset(c, 32, seed=0)
    np.testing.assert_array_equal(a.tokens("valid"), b.tokens("valid"))
    assert not np.array_equal(a.tokens("valid"), build_dataset(c, 32, seed=1).tokens("valid"))
    c.markov_seed = 5
    assert build_dataset(c, 32).entropy_rate != a.entropy_rate
    with pytest.raises(ValueError, match="synthetic"):
        a.text("train")
