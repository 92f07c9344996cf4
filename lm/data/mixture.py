"""A weighted mixture of file sources: data.mixture='PATH@WEIGHT;PATH@WEIGHT' (data.source=files).

One tokenizer for all (trained on a sample of their union), one token store per component.
Training rows follow a fixed pattern of period PERIOD in which component k holds round(w_k *
PERIOD) slots (smooth weighted round robin, so the components interleave evenly): global row g
is row q * c_k + rank of component k = pattern[g % PERIOD], q = g // PERIOD, of that component's
own endless shuffled stream. So the iterator state stays one integer and resume is exact.
Eval: the components' splits one after the other.
"""

from __future__ import annotations

import copy
import itertools

import numpy as np

from lm.config import ConfigError
from lm.data import sources

PERIOD = 1000


def parse(spec: str) -> list:
    """'PATH@W;PATH@W' -> [(path, weight), ...] (weights normalised)."""
    parts = []
    for item in (p.strip() for p in spec.split(";") if p.strip()):
        path, sep, weight = item.rpartition("@")
        try:
            w = float(weight)
        except ValueError:
            w = -1.0
        if not sep or not path or not w > 0:
            raise ConfigError(f"data.mixture: {item!r} is not PATH@WEIGHT with a positive weight "
                              "(e.g. data.mixture='web/*.jsonl@0.7;code/@0.3')")
        parts.append((path, w))
    if len(parts) < 2:
        raise ConfigError(f"data.mixture={spec!r}: give at least two PATH@WEIGHT parts separated by ';'")
    total = sum(w for _, w in parts)
    return [(p, w / total) for p, w in parts]


def open_mixture(cfg, strict: bool) -> sources.Source:
    """The union of the components as one Source (tokenizer training), with `.components`."""
    if cfg.source != "files":
        raise ConfigError(f"data.mixture needs data.source=files, not {cfg.source!r}")
    if cfg.path:
        raise ConfigError("data.mixture and data.path are exclusive: put every path in data.mixture")
    comps = []
    for path, weight in parse(cfg.mixture):
        sub = copy.deepcopy(cfg)
        sub.path, sub.mixture = path, ""
        comps.append((sources.open_files(sub, strict), weight))

    def opener():
        common = [s for s in comps[0][0].splits if all(s in c.splits for c, _ in comps)]
        return {s: (lambda s=s: itertools.chain.from_iterable(c.docs(s) for c, _ in comps)) for s in common}

    identity = {"kind": "mixture", "components": [c.identity for c, _ in comps]}  # weights: not the tokens'
    legacy = {"kind": "mixture", "components": [c.legacy_identity for c, _ in comps]}
    src = sources.Source("mixture", identity, opener, legacy_identity=legacy)
    src.components = [c for c, _ in comps]
    src.weights = [w for _, w in comps]
    return src


class MixtureSplit:
    """Rows of several splits (same seq_len) in the weighted pattern of the module docstring."""

    def __init__(self, parts: list, weights: list):
        self.parts = parts
        exact = np.asarray(weights, np.float64) * PERIOD
        counts = np.floor(exact).astype(np.int64)
        for k in np.argsort(counts - exact)[:PERIOD - counts.sum()]:  # largest remainders
            counts[k] += 1
        if (counts < 1).any():
            raise ConfigError(f"data.mixture: every weight must be at least 1/{PERIOD} of the total")
        pattern, rank, current, seen = [], [], np.zeros(len(counts)), np.zeros(len(counts), np.int64)
        for _ in range(PERIOD):
            current += counts
            k = int(np.argmax(current))
            current[k] -= PERIOD
            pattern.append(k)
            rank.append(seen[k])
            seen[k] += 1
        self.counts, self.pattern, self.rank = counts, np.array(pattern), np.array(rank)
        self._eval_starts = np.cumsum([0] + [p.num_eval_rows() for p in parts])

    def _gather(self, which: np.ndarray, local: np.ndarray, make) -> dict:
        out = None
        for k in np.unique(which):
            at = which == k
            batch = make(self.parts[k], local[at])
            if out is None:
                out = {key: np.empty((len(which),) + v.shape[1:], v.dtype) for key, v in batch.items()}
            for key, v in batch.items():
                out[key][at] = v
        return out

    def train_rows(self, rows: np.ndarray, seed: int) -> dict:
        q, r = np.divmod(np.asarray(rows, np.int64), PERIOD)
        which = self.pattern[r]
        return self._gather(which, q * self.counts[which] + self.rank[r], lambda p, j: p.train_rows(j, seed))

    def num_eval_rows(self) -> int:
        return int(self._eval_starts[-1])

    def eval_rows(self, rows: np.ndarray) -> dict:
        rows = np.asarray(rows, np.int64)
        which = np.searchsorted(self._eval_starts, rows, "right") - 1
        return self._gather(which, rows - self._eval_starts[which], lambda p, j: p.eval_rows(j))

    @property
    def tokens(self) -> np.ndarray:
        return np.concatenate([p.tokens for p in self.parts])

    @property
    def num_tokens(self) -> int:
        return sum(p.num_tokens for p in self.parts)

    @property
    def fingerprint(self):
        prints = [p.fingerprint for p in self.parts]
        return None if None in prints else "+".join(prints)

    def span(self, lo: int, hi: int) -> np.ndarray:
        """Tokens [lo, hi) of the components' streams end to end."""
        out, start = [], 0
        for p in self.parts:
            a, b = max(lo, start), min(hi, start + p.num_tokens)
            if a < b:
                out.append(p.span(a - start, b - start))
            start += p.num_tokens
        return np.concatenate(out) if out else np.zeros(0, np.int32)
