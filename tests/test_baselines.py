"""n-gram (interpolated modified Kneser-Ney) and compressor baselines."""

import bz2
import collections
import lzma
import math
import os
import zlib

import numpy as np
import pytest

from lm import baselines

SHAKESPEARE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "tinyshakespeare",
                           "input.txt")


@pytest.fixture(scope="module")
def shakespeare():
    if not os.path.exists(SHAKESPEARE):
        pytest.skip(f"tiny Shakespeare not found at {SHAKESPEARE}")
    with open(SHAKESPEARE, encoding="utf-8") as f:
        text = f.read()
    n = int(0.9 * len(text))
    return text[:n], text[n:]


def test_ngram_table_on_tiny_shakespeare(shakespeare):
    train, valid = shakespeare
    chars = sorted(set(train + valid))
    index = {c: i for i, c in enumerate(chars)}
    x = np.array([index[c] for c in train])
    y = np.array([index[c] for c in valid])
    rows = baselines.ngram_table(x, y, len(chars), orders=range(0, 7))
    bpb = [r["bits_per_byte"] for r in rows]
    assert [r["order"] for r in rows] == list(range(7))

    # Order 0 is the add-one unigram: its cross-entropy computed by hand, and within rounding
    # of the held-out characters' own unigram entropy.
    counts = collections.Counter(train)
    add_one = -sum(math.log2((counts[c] + 1) / (len(train) + len(chars))) for c in valid) / len(valid)
    assert bpb[0] == pytest.approx(add_one, abs=1e-9)
    own = collections.Counter(valid)
    entropy = -sum(n / len(valid) * math.log2(n / len(valid)) for n in own.values())
    assert abs(bpb[0] - entropy) < 0.02, (bpb[0], entropy)

    # Falls to a best order, then rises again or stays flat once contexts run thin.
    best = int(np.argmin(bpb))
    assert best >= 4, bpb
    assert all(a > b for a, b in zip(bpb[:best], bpb[1:best + 1])), bpb
    assert all(b - bpb[best] < 0.05 for b in bpb[best:]), bpb
    assert 1.9 < bpb[best] < 2.4, bpb  # ASCII text: bits per char = bits per byte


def _reference_kn(train, heldout, V, order):
    """Interpolated modified Kneser-Ney written directly from the definitions, with dicts."""
    train, heldout = list(train), list(heldout)
    raw, left = collections.Counter(), collections.defaultdict(set)
    for m in range(1, order + 2):
        for i in range(m - 1, len(train)):
            g = tuple(train[i - m + 1:i + 1])
            raw[g] += 1
            if i - m >= 0:
                left[g].add(train[i - m])

    def level(c):  # counts of grams -> (counts, discounts, context totals, freed mass)
        n = [sum(1 for v in c.values() if v == r) for r in (1, 2, 3, 4)]
        d = [0, .75, .75, .75]
        if min(n) > 0:
            y = n[0] / (n[0] + 2 * n[1])
            est = [1 - 2 * y * n[1] / n[0], 2 - 3 * y * n[2] / n[1], 3 - 4 * y * n[3] / n[2]]
            d = [0] + [v if v > 0 else .75 for v in est]
        total, freed = collections.Counter(), collections.Counter()
        for g, v in c.items():
            total[g[:-1]] += v
            freed[g[:-1]] += d[min(v, 3)]
        return c, d, total, freed

    # Continuation counts N1+(. g) below the top level, raw counts at the top.
    cont = [level({g: len(left[g]) for g in raw if len(g) == j + 1 and left[g]}) for j in range(order)]
    top = level({g: v for g, v in raw.items() if len(g) == order + 1})

    out = []
    for i, w in enumerate(heldout):
        h = heldout[max(0, i - order):i]
        used = cont + [top] if len(h) == order else cont[:len(h) + 1]  # short context at the start
        p = 1.0 / V
        for j, (c, d, total, freed) in enumerate(used):
            ctx = tuple(h[len(h) - j:]) if j else ()
            if total[ctx] > 0:
                v = c.get(ctx + (w,), 0)
                p = (max(v - d[min(v, 3)], 0) + freed[ctx] * p) / total[ctx]
        out.append(p)
    return np.array(out)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_ngram_matches_reference_kneser_ney(order):
    rng = np.random.default_rng(order)
    V = 10  # symbols 8, 9 never occur in train
    train = rng.choice(8, size=3000, p=np.arange(1, 9) / 36)
    train[1::3] = (train[0::3][:len(train[1::3])] + 1) % 8  # some structure for higher orders
    heldout = np.concatenate([rng.choice(8, size=200), [9, 8, 3]])
    got = baselines.ngram_probs(train, heldout, V, order)
    want = _reference_kn(train, heldout, V, order)
    np.testing.assert_allclose(got, want, rtol=1e-10)


@pytest.mark.parametrize("order", [0, 1, 3])
def test_ngram_distributions_sum_to_one(order):
    rng = np.random.default_rng(0)
    V = 9  # symbol 8 never occurs in train
    train = rng.choice(8, size=2000)
    # Contexts of length `order` (one of them unseen in train), each followed by every symbol:
    # the probabilities of those symbols are a full next-token distribution.
    for context in ([1, 2, 3], [8, 8, 8], [0, 0, 0]):
        ctx = context[3 - order:] if order else []
        heldout = np.concatenate([ctx + [w] for w in range(V)])
        p = baselines.ngram_probs(train, heldout, V, order)
        step = len(ctx) + 1
        np.testing.assert_allclose(p[step - 1::step].sum(), 1.0, rtol=1e-10)
        assert (p > 0).all()


def test_token_bytes_and_bad_input():
    train, heldout = np.array([0, 1, 2, 1, 0]), np.array([1, 2])
    rows = baselines.ngram_table(train, heldout, 3, [0, 1], token_bytes=np.array([1, 2, 3]))
    assert rows[0]["bytes"] == 5
    bits = -np.log2(baselines.ngram_probs(train, heldout, 3, 1)).sum()
    assert rows[1]["bits_per_byte"] == pytest.approx(bits / 5)
    with pytest.raises(ValueError, match="token ids must lie in"):
        baselines.ngram_table(train, np.array([3]), 3, [1])
    with pytest.raises(ValueError, match="non-empty"):
        baselines.ngram_table(train, np.array([], int), 3, [1])


def test_compressors_match_library_calls(shakespeare):
    train, valid = (s.encode() for s in shakespeare)
    train, valid = train[-60_000:], valid[:8_000]
    rows = {r["compressor"]: r for r in baselines.compressor_table(train, valid)}
    by_hand = {
        "zlib-9": lambda b: len(zlib.compress(b, 9)),
        "bz2-9": lambda b: len(bz2.compress(b, 9)),
        "lzma-9e": lambda b: len(lzma.compress(b, preset=9 | lzma.PRESET_EXTREME)),
    }
    assert set(rows) == set(by_hand)
    for name, size in by_hand.items():
        conditional = 8 * (size(train + valid) - size(train)) / len(valid)
        assert rows[name]["bits_per_byte"] == pytest.approx(conditional, abs=1e-12)
        assert rows[name]["unconditional_bits_per_byte"] == pytest.approx(8 * size(valid) / len(valid))
        # The train split as context helps every compressor on the same text.
        assert rows[name]["bits_per_byte"] < rows[name]["unconditional_bits_per_byte"]
    with pytest.raises(ValueError, match="unknown compressor"):
        baselines.compressor_bits_per_byte(train, valid, "gzip")


def test_ngram_on_markov_source_with_zero_transitions():
    """A 2nd-order Markov source over 3 symbols, some transitions impossible: the order-2 model
    comes close to the source's own log loss on the held-out sample, and no order gives any
    held-out symbol zero probability (the discounts always leave mass for unseen tokens)."""
    rng = np.random.default_rng(0)
    V = 3
    table = rng.dirichlet([0.3] * V, size=(V, V))
    table[table < 0.05] = 0.0
    table /= table.sum(-1, keepdims=True)
    cum = np.cumsum(table, -1).tolist()
    seq = [0, 1]
    for u in rng.random(120_000).tolist():
        c = cum[seq[-2]][seq[-1]]
        seq.append(0 if u < c[0] else 1 if u < c[1] else 2)
    seq = np.array(seq)
    train, held = seq[:100_000], seq[100_000:]
    truth = -np.mean(np.log2(table[held[:-2], held[1:-1], held[2:]]))
    rows = baselines.ngram_table(train, held, V, range(0, 7))
    bits = [r["bits_per_token"] for r in rows]
    assert np.isfinite(bits).all(), bits
    assert abs(bits[2] - truth) < 0.02, (bits, truth)
    assert min(bits) >= truth - 0.02 and bits[1] > bits[2] + 0.05
    assert baselines.parse_orders("0..3") == [0, 1, 2, 3] == baselines.parse_orders("3")
    assert baselines.parse_orders("1,4") == [1, 4]
    with pytest.raises(ValueError, match="orders"):
        baselines.parse_orders("a..b")
