"""Synthetic sources with a known answer.

Markov: a k-th order chain over V symbols; each of the V^k contexts has a next-symbol
distribution drawn from Dirichlet(concentration). The pair (last k symbols) is a first-order
chain on V^k states; its stationary distribution pi gives the exact entropy rate
H = sum_s pi(s) H(P[s]) bits/symbol, the best loss any model can reach.

Copy (induction): each example is p_1..p_L, SEP, p_1..p_L with p_i uniform over copy_vocab
symbols (SEP = copy_vocab). Only the targets of the second copy count (weights 1): they are
predictable only by looking back. A row of seq_len + 1 tokens holds as many whole examples of
2L + 1 tokens as fit; the rest is padding (segment id 0, weight 0).
"""

from __future__ import annotations

import numpy as np

MARKOV_CHAIN_LEN = 8192  # symbols per independent chain (= document) of a Markov split


def markov_table(vocab: int, order: int, concentration: float, seed: int) -> np.ndarray:
    """Transition table [V^k, V]; row s = the context (x_{t-k}..x_{t-1}) in base V."""
    if vocab < 2 or order < 0 or concentration <= 0:
        raise ValueError(f"markov: need vocab >= 2, order >= 0, concentration > 0; got "
                         f"vocab={vocab}, order={order}, concentration={concentration}")
    if vocab ** order > 1 << 20:
        raise ValueError(f"markov: vocab^order = {vocab}^{order} contexts is too many (max 2^20)")
    rng = np.random.default_rng(seed)
    table = rng.dirichlet(np.full(vocab, concentration), size=vocab ** order)
    return np.maximum(table, 1e-300) / np.maximum(table, 1e-300).sum(1, keepdims=True)


def stationary_distribution(table: np.ndarray, tol: float = 1e-13, max_iter: int = 100_000) -> np.ndarray:
    """pi over the V^k contexts, by power iteration on the context chain.

    Context s = (a, rest) moves to (rest, y) with probability P[s, y], so
    pi'[(rest, y)] = sum_a pi[(a, rest)] P[(a, rest), y].
    """
    S, V = table.shape
    if S == 1:  # order 0: a single empty context
        return np.ones(1)
    pi = np.full(S, 1.0 / S)
    for _ in range(max_iter):
        new = (pi[:, None] * table).reshape(V, S // V, V).sum(0).reshape(S)
        new /= new.sum()
        if np.abs(new - pi).sum() < tol:
            return new
        pi = new
    return pi


def markov_entropy_rate(table: np.ndarray) -> float:
    """Exact entropy rate in bits per symbol of the chain with transition table [V^k, V]."""
    pi = stationary_distribution(table)
    h = -(table * np.log2(table)).sum(1)
    return float(pi @ h)


def markov_sample(table: np.ndarray, order: int, num_symbols: int, rng) -> tuple:
    """(symbols, doc_ids): independent stationary chains of MARKOV_CHAIN_LEN symbols each.

    The chains run side by side (vectorised over chains); each starts in a context drawn from pi.
    """
    S, V = table.shape
    chains = max(1, -(-num_symbols // MARKOV_CHAIN_LEN))
    length = -(-num_symbols // chains)
    cdf = np.cumsum(table, 1)
    cdf[:, -1] = 1.0
    pi = stationary_distribution(table)
    state = rng.choice(S, size=chains, p=pi)
    out = np.empty((chains, length + order), np.int32)
    for j in range(order):  # unpack the start context into its k symbols
        out[:, j] = (state // V ** (order - 1 - j)) % V
    u = rng.random((length, chains))
    for t in range(length):
        sym = (u[t][:, None] > cdf[state]).sum(1)
        out[:, order + t] = sym
        state = (state * V + sym) % S if order else state
    docs = np.repeat(np.arange(chains, dtype=np.int32)[:, None], length + order, 1)
    return out.reshape(-1)[:num_symbols], docs.reshape(-1)[:num_symbols]


def markov_log_loss(table: np.ndarray, order: int, symbols: np.ndarray, doc_ids=None) -> float:
    """Mean -log2 P(x_t | previous k) under `table`, over positions with a full context in-document."""
    V = table.shape[1]
    symbols = np.asarray(symbols, np.int64)
    ctx = np.zeros(len(symbols) - order, np.int64)
    for j in range(order):
        ctx = ctx * V + symbols[j:len(symbols) - order + j]
    nxt = symbols[order:]
    keep = np.ones(len(nxt), bool)
    if doc_ids is not None and order:
        keep = doc_ids[order:] == doc_ids[:len(doc_ids) - order]
    return float(-np.log2(table[ctx, nxt])[keep].mean())


class CopyTask:
    """Rows of copy examples, generated from (seed, row index): endless and O(1) to resume."""

    def __init__(self, vocab: int, prefix_len: int, seq_len: int, document_masking: bool):
        if vocab < 1 or prefix_len < 1:
            raise ValueError(f"copy: need copy_vocab >= 1 and copy_prefix_len >= 1, got {vocab}, {prefix_len}")
        self.vocab, self.L, self.T = vocab, prefix_len, seq_len
        self.sep = vocab
        self.example = 2 * prefix_len + 1
        self.per_row = (seq_len + 1) // self.example
        if self.per_row < 1:
            raise ValueError(f"data.copy_prefix_len={prefix_len}: an example (2 * {prefix_len} + 1 = "
                             f"{self.example} tokens) does not fit seq_len + 1 = {seq_len + 1}; "
                             f"need copy_prefix_len <= {seq_len // 2}")
        self.document_masking = document_masking
        used = self.per_row * self.example
        L = prefix_len
        pos = np.arange(seq_len + 1)
        k, r = pos // self.example, pos % self.example
        self._seg = np.where(pos < used, (k + 1) if document_masking else 1, 0).astype(np.int32)
        # target at input position j is token j+1: it counts when it is in a second copy
        t = pos[1:]
        self._weights = ((t < used) & (t % self.example > L)).astype(np.float32)
        self._layout = (pos < used, k, r)

    @property
    def vocab_size(self) -> int:
        return self.vocab + 1

    def rows(self, indices: np.ndarray, seed: int, stream: int) -> dict:
        """Rows `indices` of stream `stream` (0 train, 1 valid, ...)."""
        inside, k, r = self._layout
        L = self.L
        out = np.zeros((len(indices), self.T + 1), np.int32)
        for i, g in enumerate(np.asarray(indices).tolist()):
            prefix = np.random.default_rng([seed, stream, g]).integers(0, self.vocab, (self.per_row, L))
            row = np.where(r < L, prefix[np.minimum(k, self.per_row - 1), np.minimum(r, L - 1)],
                           np.where(r == L, self.sep, prefix[np.minimum(k, self.per_row - 1),
                                                             np.clip(r - L - 1, 0, L - 1)]))
            out[i] = np.where(inside, row, 0)
        b = len(indices)
        return {"inputs": out[:, :-1], "targets": out[:, 1:],
                "weights": np.broadcast_to(self._weights, (b, self.T)).copy(),
                "segment_ids": np.broadcast_to(self._seg[:-1], (b, self.T)).copy()}
