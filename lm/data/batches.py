"""Fixed-length rows from a token stream, the resumable train iterator and eval batches.

A split is one token array (documents concatenated, no separator token) with a parallel array
of document ids. A row is T+1 consecutive tokens: inputs = row[:-1], targets = row[1:].

Training: in epoch e the stream is cut at offset o_e + i*T (o_e in [0, T) drawn from the seed,
so windows differ between epochs) into R rows, visited in a permutation drawn from (seed, e).
Global row g of the endless stream is row perm_e[g % R] of epoch e = g // R, so any position is
reachable in O(R) work (one permutation) without replaying the stream: state() is {'step': n}.
Process p of P takes rows [p*b, (p+1)*b) of each global batch of B = P*b rows.

Eval: rows start at 0, T, 2T, ... so each token after the first is a target exactly once; the
last row and the last batch are padded (weights 0, segment id 0).

Random windows (data.sampling=random_windows, nanoGPT's get_batch): global row g starts at
hash(seed, stream, g) mod (n - T), uniform over every start a row of T+1 tokens fits at. A
counter hash rather than a generator: any row is O(1) to make, so the iterator state is still
{'step': n} and processes take disjoint slices of the same global batch.
"""

from __future__ import annotations

import numpy as np


def _segments(doc_ids: np.ndarray, document_masking: bool) -> np.ndarray:
    """Per-row segment ids starting at 1 (doc ids are non-decreasing along a row)."""
    if not document_masking:
        return np.ones(doc_ids.shape, np.int32)
    return (doc_ids - doc_ids[:, :1] + 1).astype(np.int32)


def local_slice(batch_size: int, process_index: int, process_count: int) -> tuple:
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} must be in [0, process_count={process_count})")
    if batch_size < 1 or batch_size % process_count:
        raise ValueError(f"batch_size={batch_size} must be a positive multiple of process_count={process_count}")
    b = batch_size // process_count
    return b, process_index * b


BIG_EPOCH = 1 << 22  # rows per epoch above which the permutation is computed, not stored


def _feistel_permutation(n: int, keys):
    """A bijection of range(n) from a keyed Feistel network with cycle walking: O(1) memory for
    epochs too large for an explicit permutation array."""
    half = max(1, (int(n - 1).bit_length() + 1) // 2)
    mask = np.uint64((1 << half) - 1)
    keys = [np.uint64(k) for k in keys]

    def rounds(x):
        left, right = x >> np.uint64(half), x & mask
        for k in keys:
            f = (right * np.uint64(0x9E3779B1) + k) & np.uint64(0xFFFFFFFF)
            f ^= f >> np.uint64(15)
            f = (f * np.uint64(0x85EBCA6B)) & np.uint64(0xFFFFFFFF)
            f ^= f >> np.uint64(13)
            left, right = right, left ^ (f & mask)
        return (left << np.uint64(half)) | right

    def perm(i):
        y = rounds(np.asarray(i, np.uint64))
        while (out := y >= n).any():  # walk the cycle back into range(n)
            y[out] = rounds(y[out])
        return y.astype(np.int64)

    return perm


SAMPLINGS = ("packed_epochs", "random_windows")


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64 arrays (wrapping arithmetic): a bijective bit mixer."""
    x = (x + np.uint64(0x9E3779B97F4A7C15)) & np.uint64(0xFFFFFFFFFFFFFFFF)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def window_starts(rows: np.ndarray, seed: int, stream: int, num_starts: int) -> np.ndarray:
    """Start of each global row: uniform in [0, num_starts), a pure function of (seed, stream, row).
    (The modulo bias is below num_starts / 2^64.)"""
    key = _splitmix64(np.array([(seed & 0xFFFFFFFF) << 32 | (stream & 0xFFFFFFFF)], np.uint64))
    with np.errstate(over="ignore"):
        mixed = _splitmix64(np.asarray(rows, np.uint64) ^ key)
    return (mixed % np.uint64(num_starts)).astype(np.int64)


class TokenStream:
    """A token array with the stream interface of PackedSplit (num_tokens, span, fingerprint)."""

    fingerprint = None

    def __init__(self, tokens: np.ndarray):
        self.tokens = np.asarray(tokens, np.int32)
        self.num_tokens = len(self.tokens)

    def span(self, lo: int, hi: int) -> np.ndarray:
        """Tokens [lo, hi) of the stream as int32, reading only those."""
        return self.tokens[lo:hi]


class PackedSplit:
    """One split as a token stream packed into rows of seq_len + 1 tokens.

    Subclasses (the on-disk token store) replace `_take` and call `_setup` instead of keeping
    the arrays in memory.
    """

    def __init__(self, tokens: np.ndarray, doc_ids: np.ndarray, seq_len: int, document_masking: bool, name=""):
        self.tokens = np.asarray(tokens, np.int32)
        self.doc_ids = np.asarray(doc_ids, np.int32)
        self._setup(len(self.tokens), seq_len, document_masking, name)

    def _setup(self, n: int, seq_len: int, document_masking: bool, name: str):
        self.num_tokens = n
        self.T = seq_len
        self.document_masking = document_masking
        if n < seq_len + 1:
            raise ValueError(f"corpus too short: split {name!r} has {n} tokens, fewer than one sequence "
                             f"of seq_len + 1 = {seq_len + 1}; use a smaller seq_len or more data")
        # R rows fit for any offset in [0, max_offset]; see the module docstring.
        full = (n - 1) // seq_len
        self.rows_per_epoch = full - 1 if full >= 2 else 1
        self.max_offset = min(seq_len - 1, n - 1 - self.rows_per_epoch * seq_len)
        self._epochs = {}

    # What identifies the tokens without reading them (the token store's checksums); None: only
    # the tokens themselves do (in-memory splits). Keys caches such as the baselines'.
    fingerprint = None
    span = TokenStream.span

    def _take(self, idx: np.ndarray, docs: bool) -> tuple:
        """(int32 tokens at idx, doc ids at idx or None); idx is [rows, k] positions in range."""
        return self.tokens[idx], (self.doc_ids[idx] if docs else None)

    def _epoch(self, seed: int, epoch: int):
        key = (seed, epoch)
        if key not in self._epochs:
            rng = np.random.default_rng([seed, epoch])
            offset = int(rng.integers(0, self.max_offset + 1))
            if self.rows_per_epoch <= BIG_EPOCH:
                perm = rng.permutation(self.rows_per_epoch).__getitem__
            else:
                perm = _feistel_permutation(self.rows_per_epoch, rng.integers(0, 1 << 32, size=4))
            self._epochs = {key: (offset, perm)}  # keep one
        return self._epochs[key]

    def _rows(self, starts: np.ndarray) -> dict:
        idx = starts[:, None] + np.arange(self.T + 1)
        rows, docs = self._take(idx, self.document_masking)
        return {"inputs": rows[:, :-1], "targets": rows[:, 1:],
                "weights": np.ones((len(starts), self.T), np.float32),
                "segment_ids": _segments(docs[:, :-1] if docs is not None else rows[:, :-1], self.document_masking)}

    def train_rows(self, rows: np.ndarray, seed: int) -> dict:
        """Global row indices of the endless shuffled stream -> a batch."""
        epochs, within = np.divmod(np.asarray(rows, np.int64), self.rows_per_epoch)
        starts = np.empty(len(within), np.int64)
        for epoch in dict.fromkeys(epochs.tolist()):  # in order: one cached epoch at a time
            at = epochs == epoch
            offset, perm = self._epoch(seed, epoch)
            starts[at] = offset + np.asarray(perm(within[at]), np.int64) * self.T
        return self._rows(starts)

    def window_rows(self, rows: np.ndarray, seed: int, stream: int = 0) -> dict:
        """Global row indices -> rows of T+1 tokens starting at uniform random offsets."""
        return self._rows(window_starts(rows, seed, stream, self.num_tokens - self.T))

    def num_eval_rows(self) -> int:
        return -(-(self.num_tokens - 1) // self.T)

    def eval_rows(self, rows: np.ndarray) -> dict:
        n, T = self.num_tokens, self.T
        idx = rows[:, None] * T + np.arange(T + 1)
        ok = idx < n
        toks, docs = self._take(np.minimum(idx, n - 1), self.document_masking)
        toks = np.where(ok, toks, 0).astype(np.int32)
        segs = _segments(docs[:, :-1] if docs is not None else toks[:, :-1], self.document_masking)
        return {"inputs": toks[:, :-1], "targets": toks[:, 1:],
                "weights": ok[:, 1:].astype(np.float32),
                "segment_ids": np.where(ok[:, :-1], segs, 0).astype(np.int32)}


def empty_batch(rows: int, seq_len: int) -> dict:
    z = np.zeros((rows, seq_len), np.int32)
    return {"inputs": z, "targets": z.copy(), "weights": np.zeros((rows, seq_len), np.float32),
            "segment_ids": z.copy()}


class TrainIterator:
    """Endless, deterministic, resumable: `state()` / `restore(state)` are O(1)."""

    def __init__(self, make_rows, batch_size: int, *, seed: int, process_index: int = 0, process_count: int = 1):
        self._make_rows = make_rows  # (global row indices, seed) -> batch dict
        self.batch_size = batch_size
        self.seed = seed
        self.local, self.first = local_slice(batch_size, process_index, process_count)
        self.step = 0

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        start = self.step * self.batch_size + self.first
        batch = self._make_rows(np.arange(start, start + self.local, dtype=np.int64), self.seed)
        self.step += 1
        return batch

    def state(self) -> dict:
        return {"step": self.step, "seed": self.seed, "batch_size": self.batch_size}

    def restore(self, state: dict) -> None:
        for key in ("seed", "batch_size"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(f"iterator state has {key}={state[key]}, this iterator {getattr(self, key)}")
        self.step = int(state["step"])


def eval_batches(num_rows: int, make_rows, batch_size: int, *, max_batches: int = 0,
                 process_index: int = 0, process_count: int = 1, seq_len: int):
    """Batches over rows 0..num_rows-1 in order; the last one padded with empty rows."""
    local, first = local_slice(batch_size, process_index, process_count)
    num_batches = -(-num_rows // batch_size)
    if max_batches:
        num_batches = min(num_batches, max_batches)
    for k in range(num_batches):
        rows = np.arange(k * batch_size + first, k * batch_size + first + local)
        real = rows[rows < num_rows]
        batch = make_rows(real) if len(real) else empty_batch(0, seq_len)
        if len(real) < local:
            pad = empty_batch(local - len(real), seq_len)
            batch = {key: np.concatenate([batch[key], pad[key]]) for key in batch}
        yield batch
