"""Baselines in the models' own units, bits per byte of the held-out split.

Two families, both "a language model is a Markov model with smoothed transitions":

* n-gram models (finite-order Markov) of order k = 0..K: order k predicts a token from the
  k tokens before it. Order 0 is the add-one unigram. Orders >= 1 are interpolated
  *modified* Kneser-Ney (Chen & Goodman 1998): three discounts D1, D2, D3+ per level,
  estimated from count-of-counts, raw counts at the top level, continuation counts
  (number of distinct left neighbours) below it, and a uniform distribution over the full
  vocabulary at the bottom, so every symbol, seen or not, has nonzero probability.
  Everything is vectorised: an m-gram gets a dense integer id from its (m-1)-gram suffix
  id and the token to its left via `np.unique`, so no Python loop runs per token.
* Lempel-Ziv style compressors from the standard library (zlib -9, bz2 -9, lzma 9e),
  measured conditionally, compressed(train + held-out) - compressed(train), so that they
  get the same context the models had; compressed(held-out) alone is kept for reference.
"""

from __future__ import annotations

import bz2
import hashlib
import json
import lzma
import math
import os
import time
import zlib

import numpy as np

from lm.files import atomic_write

COMPRESSORS = {
    "zlib-9": lambda b: zlib.compress(b, 9),
    "bz2-9": lambda b: bz2.compress(b, 9),
    "lzma-9e": lambda b: lzma.compress(b, preset=9 | lzma.PRESET_EXTREME),
}

# ----------------------------------------------------------------------------- n-grams


def _as_tokens(x, vocab_size: int, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"{what}: expected a 1-D array of token ids, got shape {x.shape}")
    x = x.astype(np.int64)
    if x.size and (x.min() < 0 or x.max() >= vocab_size):
        raise ValueError(f"{what}: token ids must lie in [0, {vocab_size}), "
                         f"got range [{x.min()}, {x.max()}]")
    return x


def _gram_ids(z: np.ndarray, max_len: int) -> list[np.ndarray]:
    """ids[m][i] = dense id of the m-gram z[i-m+1 .. i] (-1 where it starts before 0 or
    covers a negative separator token).

    ids[0] is all zeros (the empty gram). The m-gram id is a dense relabelling of the pair
    (id of its (m-1)-gram suffix, token to its left), so equal grams get equal ids exactly
    (no hashing collisions) and every key fits in int64.
    """
    n = z.size
    ids = [np.zeros(n, np.int64)]
    for m in range(1, max_len + 1):
        prev = ids[-1]
        left = np.full(n, -1, np.int64)
        left[m - 1:] = z[:n - m + 1]  # token at i-m+1
        valid = (left >= 0) & (prev >= 0)
        key = prev * (int(z.max(initial=0)) + 1) + left
        cur = np.full(n, -1, np.int64)
        cur[valid] = np.unique(key[valid], return_inverse=True)[1]
        ids.append(cur)
    return ids


def _discounts(counts: np.ndarray) -> np.ndarray:
    """Modified Kneser-Ney discounts [0, D1, D2, D3+] from count-of-counts (Chen & Goodman).

    Where the estimate cannot be made (a count-of-counts is 0) or is not positive (counts far
    from the Good-Turing shape, e.g. continuation counts over a tiny alphabet), the classic
    fixed discount 0.75 stands in: a zero discount would leave unseen tokens no mass.
    """
    n = [np.sum(counts == r) for r in (1, 2, 3, 4)]
    if min(n) == 0:
        return np.array([0.0, 0.75, 0.75, 0.75])
    y = n[0] / (n[0] + 2 * n[1])
    d = [1 - 2 * y * n[1] / n[0], 2 - 3 * y * n[2] / n[1], 3 - 4 * y * n[3] / n[2]]
    return np.array([0.0] + [v if v > 0 else 0.75 for v in d])


class _Level:
    """Statistics of one level (context length j) of the Kneser-Ney chain.

    `count[g]` is the count of (j+1)-gram g (raw, or continuation count), `ctx_of[g]` its
    context id; per context: total count, and the mass the discounts free (gamma numerator).
    """

    def __init__(self, count, ctx_of, num_ctx):
        self.count = count
        self.discount = _discounts(count[count > 0])
        d = self.discount[np.minimum(count, 3)]
        self.total = np.bincount(ctx_of, weights=count, minlength=num_ctx)
        self.freed = np.bincount(ctx_of, weights=d, minlength=num_ctx)
        self.d = d

    def interpolate(self, gram, ctx, lower):
        """p(w | h) = max(c(hw) - D, 0) / c(h) + gamma(h) p_lower(w | h'); p_lower if c(h)=0."""
        total = np.where(ctx >= 0, self.total[np.maximum(ctx, 0)], 0.0)
        seen = gram >= 0
        g = np.maximum(gram, 0)
        c = np.where(seen, self.count[g], 0)
        d = np.where(seen, self.d[g], 0.0)
        safe = np.maximum(total, 1e-300)
        p = (np.maximum(c - d, 0.0) + self.freed[np.maximum(ctx, 0)] * lower) / safe
        return np.where(total > 0, p, lower)


def _ngram_probs(train, heldout, vocab_size: int, orders):
    """Yields (k, p) for each order k in `orders`: p[i] = P_k(heldout[i] | its context)."""
    orders = sorted({int(k) for k in orders})
    if not orders or orders[0] < 0:
        raise ValueError(f"orders must be non-negative integers, got {orders}")
    x = _as_tokens(train, vocab_size, "train tokens")
    y = _as_tokens(heldout, vocab_size, "held-out tokens")
    if x.size == 0 or y.size == 0:
        raise ValueError(f"n-gram baselines need non-empty splits (train {x.size}, held-out {y.size} tokens)")
    K = orders[-1]

    # Grams over train and held-out side by side; a -1 separator keeps grams from spanning both.
    z = np.concatenate([x, [-1], y])
    off = x.size + 1
    ids = _gram_ids(z, K + 1)
    is_train = np.zeros(z.size, bool)
    is_train[:x.size] = True

    def level(m, continuation):
        """Level statistics of the m-grams, and the context id at every position."""
        g, num = ids[m], int(ids[m].max(initial=-1)) + 1
        # The context of the m-gram ending at i is the (m-1)-gram ending at i-1.
        ctx = np.zeros(z.size, np.int64)
        if m > 1:
            ctx[0] = -1
            ctx[1:] = ids[m - 1][:-1]
        ok = g >= 0
        ctx_of = np.zeros(num, np.int64)
        ctx_of[g[ok]] = ctx[ok]
        if continuation:  # N1+(. gram): distinct (m+1)-grams in train with this gram as suffix
            at = np.flatnonzero(is_train & (ids[m + 1] >= 0))
            _, first = np.unique(ids[m + 1][at], return_index=True)
            count = np.bincount(g[at[first]], minlength=num)
        else:
            count = np.bincount(g[is_train & ok], minlength=num)
        num_ctx = int(ids[m - 1].max(initial=0)) + 1
        return _Level(count.astype(np.int64), ctx_of, num_ctx), ctx[off:]

    chain = np.full(y.size, 1.0 / vocab_size)  # continuation chain p_j, j = -1 (uniform), 0, 1, ...
    for k in range(0, K + 1):
        if k in orders:
            if k == 0:  # add-one unigram
                c = np.bincount(x, minlength=vocab_size)
                yield k, (c[y] + 1.0) / (x.size + vocab_size)
            else:  # raw counts at the top level, backed by the continuation chain
                top, ctx = level(k + 1, continuation=False)
                yield k, top.interpolate(ids[k + 1][off:], ctx, chain)
        if k < K:
            low, ctx = level(k + 1, continuation=True)
            chain = low.interpolate(ids[k + 1][off:], ctx, chain)


def ngram_probs(train, heldout, vocab_size: int, order: int) -> np.ndarray:
    """P(heldout[i] | up to `order` previous held-out tokens) under the order-`order` model."""
    return next(_ngram_probs(train, heldout, vocab_size, [order]))[1]


def ngram_table(train, heldout, vocab_size: int, orders=range(0, 9), token_bytes=None) -> list[dict]:
    """Bits per byte (and per token) of n-gram models of the given orders on `heldout`.

    train, heldout: 1-D arrays of token ids in [0, vocab_size). token_bytes: [V] bytes each
    id stands for (None: 1 byte per token). Held-out tokens near the start of the split
    use the context they have (shorter than k). Returns one row per order:
    {'order', 'bits_per_token', 'bits_per_byte', 'tokens', 'bytes'}.
    """
    tb = np.ones(vocab_size) if token_bytes is None else np.asarray(token_bytes, np.float64)
    if tb.shape != (vocab_size,):
        raise ValueError(f"token_bytes has shape {tb.shape}, expected ({vocab_size},)")
    y = _as_tokens(heldout, vocab_size, "held-out tokens")
    nbytes = float(tb[y].sum())
    rows = []
    for k, p in _ngram_probs(train, y, vocab_size, orders):
        bits = float(-np.log2(p).sum())
        rows.append({"order": k, "bits_per_token": bits / y.size, "bits_per_byte": bits / nbytes,
                     "tokens": int(y.size), "bytes": int(nbytes)})
    return rows


def ngram_bits_per_byte(train, heldout, vocab_size: int, order: int, token_bytes=None) -> float:
    """Bits per byte of an order-`order` n-gram model (see `ngram_table`)."""
    return ngram_table(train, heldout, vocab_size, [order], token_bytes)[0]["bits_per_byte"]


# ----------------------------------------------------------------------------- compressors


def compressor_bits_per_byte(train: bytes, heldout: bytes, name: str = "lzma-9e", *,
                             conditional: bool = True, heldout_bytes: float | None = None) -> float:
    """Bits per byte of `heldout` under a stdlib compressor.

    conditional: 8 * (|C(train + heldout)| - |C(train)|), else 8 * |C(heldout)|, divided by
    heldout_bytes (default len(heldout); pass sum(token_bytes) for token streams).
    """
    if name not in COMPRESSORS:
        raise ValueError(f"unknown compressor {name!r}; choose from {sorted(COMPRESSORS)}")
    compress = COMPRESSORS[name]
    n = float(len(heldout) if heldout_bytes is None else heldout_bytes)
    if n <= 0:
        raise ValueError("compressor baseline: the held-out split is empty")
    if conditional:
        size = len(compress(train + heldout)) - len(compress(train))
    else:
        size = len(compress(heldout))
    return 8.0 * size / n


def compressor_table(train: bytes, heldout: bytes, heldout_bytes: float | None = None) -> list[dict]:
    """One row per compressor: conditional and unconditional bits per byte of `heldout`."""
    rows = []
    for name in COMPRESSORS:
        t = time.time()
        row = {"compressor": name}
        for cond in (True, False):
            key = "bits_per_byte" if cond else "unconditional_bits_per_byte"
            row[key] = compressor_bits_per_byte(train, heldout, name, conditional=cond,
                                                heldout_bytes=heldout_bytes)
        row["seconds"] = round(time.time() - t, 2)
        rows.append(row)
    return rows


def tokens_to_bytes(tokens: np.ndarray, vocab_size: int) -> bytes:
    """A token stream as bytes for the compressors, when a source has no text (synthetic)."""
    dtype = np.uint8 if vocab_size <= 256 else (np.uint16 if vocab_size <= 65536 else np.uint32)
    return np.asarray(tokens).astype(dtype).tobytes()


# ----------------------------------------------------------------------------- experiment table


def parse_orders(text: str) -> list:
    """'0..8' -> [0..8]; '6' -> [0..6]; '1,3,5' -> [1, 3, 5]."""
    try:
        if ".." in text:
            a, b = text.split("..")
            orders = list(range(int(a), int(b) + 1))
        elif "," in text:
            orders = [int(t) for t in text.split(",") if t.strip()]
        else:
            orders = list(range(int(text) + 1))
    except ValueError:
        raise ValueError(f"orders={text!r}: expected 'a..b', 'K' or a comma list of integers") from None
    if not orders or min(orders) < 0:
        raise ValueError(f"orders={text!r}: need at least one order, all >= 0")
    return orders



def _split_text(dataset, split):
    """The raw text of a split as UTF-8 bytes, or None for sources without text."""
    text_fn = getattr(dataset, "text", None)
    if text_fn is None:
        return None
    try:
        text = text_fn(split)
    except (NotImplementedError, ValueError, KeyError, AttributeError):
        return None
    if text is None:
        return None
    return text.encode("utf-8", "surrogateescape") if isinstance(text, str) else bytes(text)


def dataset_baselines(dataset, orders=range(0, 9), split: str = "valid", compressors: bool = True) -> dict:
    """n-gram and compressor rows for a `lm.data` Dataset, held-out = `split`."""
    if split not in dataset.splits:
        raise ValueError(f"split {split!r} not in the dataset's splits {list(dataset.splits)}")
    tok = dataset.tokenizer
    V = int(dataset.vocab_size)
    tb = np.asarray(tok.token_bytes, np.float64)
    train, held = np.asarray(dataset.tokens("train")), np.asarray(dataset.tokens(split))
    t = time.time()
    ngrams = ngram_table(train, held, V, orders, tb)
    result = {
        "split": split, "tokenizer": getattr(tok, "name", type(tok).__name__), "vocab_size": V,
        "train_tokens": int(train.size), "heldout_tokens": int(held.size),
        "heldout_bytes": int(tb[held].sum()),
        "ngram": ngrams, "ngram_smoothing": "interpolated modified Kneser-Ney (order 0: add-one unigram)",
        "ngram_seconds": round(time.time() - t, 2),
    }
    entropy_rate = getattr(dataset, "entropy_rate", None)
    if entropy_rate is not None:
        result["entropy_rate_bits_per_symbol"] = float(entropy_rate)
    if compressors:
        train_b, held_b = _split_text(dataset, "train"), _split_text(dataset, split)
        if train_b is None or held_b is None:  # synthetic source: compress the token stream
            train_b, held_b = tokens_to_bytes(train, V), tokens_to_bytes(held, V)
            result["compressor_input"] = "token ids"
            nbytes = float(tb[held].sum())
        else:
            result["compressor_input"] = "text"
            nbytes = None
        result["compressors"] = compressor_table(train_b, held_b, nbytes)
    return result


def run_baselines(config, orders=range(0, 9), *, split: str | None = None, workdir=None,
                  compressors: bool = True) -> dict:
    """Baselines on an experiment config's data (built with `lm.data.build_dataset`).

    The held-out split defaults to config.experiment.split ('valid'); n-grams run on the
    config's tokenizer, compressors on the raw text of the splits.
    """
    from lm import data as lm_data

    split = split or config.experiment.get("split", "valid") or "valid"
    dataset = lm_data.build_dataset(config.data, int(config.model.max_len), workdir=workdir,
                                    seed=int(config.seed))
    result = dataset_baselines(dataset, orders, split, compressors)
    result["data"] = config.data.to_dict() if hasattr(config.data, "to_dict") else dict(config.data)
    return result


def format_table(result: dict) -> str:
    """The baselines as a plain-text table (bits per byte of the held-out split)."""
    lines = [f"baselines on split {result['split']!r}: {result['heldout_tokens']} tokens, "
             f"{result['heldout_bytes']} bytes, tokenizer {result['tokenizer']} (V={result['vocab_size']})",
             f"{'model':<28} {'bits/byte':>10} {'bits/token':>11}"]
    for r in result.get("ngram", []):
        lines.append(f"{'n-gram order ' + str(r['order']):<28} {r['bits_per_byte']:>10.4f} "
                     f"{r['bits_per_token']:>11.4f}")
    for r in result.get("compressors", []):
        lines.append(f"{r['compressor'] + ' | train':<28} {r['bits_per_byte']:>10.4f}")
        lines.append(f"{r['compressor'] + ' alone':<28} {r['unconditional_bits_per_byte']:>10.4f}")
    if "entropy_rate_bits_per_symbol" in result:
        lines.append(f"{'source entropy rate':<28} {'':>10} {result['entropy_rate_bits_per_symbol']:>11.4f}")
    lines.append(f"n-grams: {result.get('ngram_smoothing', '')}")
    return "\n".join(lines)


def write_json(result: dict, path: str) -> str:
    """Write `result` as JSON (atomically); returns the absolute path."""
    path = os.path.abspath(path)
    text = json.dumps(result, indent=1, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    atomic_write(path, text + "\n")
    return path


def best_ngram(result: dict) -> dict:
    """The row with the lowest bits per byte."""
    return min(result["ngram"], key=lambda r: r["bits_per_byte"])


def unigram_entropy(tokens, token_bytes=None) -> float:
    """Empirical entropy of the tokens' own frequencies, in bits per byte (a reference)."""
    tokens = np.asarray(tokens)
    _, counts = np.unique(tokens, return_counts=True)
    p = counts / counts.sum()
    bits = -float((counts * np.log2(p)).sum())
    nbytes = tokens.size if token_bytes is None else float(np.asarray(token_bytes)[tokens].sum())
    return bits / nbytes if nbytes else math.nan


# ----------------------------------------------------------------------------- beside results

# Short names in records (TEAM.md): conditional compressors (given the train split, as the
# models are), the same alone, and the best Kneser-Ney order as kn<k>.
_SHORT = {"zlib-9": "gzip", "bz2-9": "bz2", "lzma-9e": "lzma"}


def _dataset_key(dataset, split: str, orders) -> str:
    """sha256 of everything a baseline depends on: tokens, token bytes and text of both splits."""
    h = hashlib.sha256()
    h.update(json.dumps({"split": split, "orders": list(orders), "source": dataset.source}).encode())
    h.update(np.asarray(dataset.tokenizer.token_bytes, np.float64).tobytes())
    for name in ("train", split):
        h.update(np.ascontiguousarray(dataset.tokens(name), np.int64).tobytes())
        h.update(_split_text(dataset, name) or b"")
    return h.hexdigest()[:16]


def cached_baselines(config, *, split: str | None = None, workdir=None, orders=range(0, 9),
                     dataset=None) -> dict:
    """`run_baselines` of config's data, computed once per (dataset, split) and cached as JSON
    under the data cache dir (data.data_dir / $LM_DATA_DIR / ~/.cache/lm) in baselines/."""
    from lm import data as lm_data
    from lm.data import sources

    split = split or config.experiment.get("split", "valid") or "valid"
    if dataset is None:
        dataset = lm_data.build_dataset(config.data, int(config.model.max_len), workdir=workdir,
                                        seed=int(config.seed))
    key = _dataset_key(dataset, split, orders)
    path = os.path.join(sources.data_dir(config.data), "baselines", f"{dataset.source}-{split}-{key}.json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        pass
    result = dataset_baselines(dataset, orders, split)
    result["data"] = config.data.to_dict() if hasattr(config.data, "to_dict") else dict(config.data)
    result["key"] = key
    try:
        write_json(result, path)
    except OSError:  # a read-only cache still gives the numbers
        pass
    return result


def record_baselines(result: dict) -> dict:
    """{'split', 'bits_per_byte': {'lzma': .., 'gzip': .., 'bz2': .., 'lzma_alone': .., 'kn8': ..}}."""
    bpb = {}
    for r in result.get("compressors", []):
        short = _SHORT.get(r["compressor"], r["compressor"])
        bpb[short] = float(r["bits_per_byte"])
        bpb[short + "_alone"] = float(r["unconditional_bits_per_byte"])
    if result.get("ngram"):
        best = best_ngram(result)
        bpb[f"kn{best['order']}"] = float(best["bits_per_byte"])
    return {"split": result["split"], "bits_per_byte": bpb}


def beside_line(bits_per_byte: float, baselines: dict) -> str:
    """'valid 2.94 bits/byte; same split: kn8 2.13, lzma|train 1.29, ... (best: lzma, -1.65)'."""
    def label(k):
        if k.endswith("_alone"):
            return k[:-len("_alone")] + " alone"
        return k + "|train" if k in _SHORT.values() else k

    bpb = baselines["bits_per_byte"]
    parts = [f"{label(k)} {v:.3f}" for k, v in sorted(bpb.items(), key=lambda kv: kv[1])]
    best = min(bpb, key=bpb.get)
    gap = bits_per_byte - bpb[best]
    verdict = "beats every baseline" if gap < 0 else f"{gap:.3f} bits/byte behind {best}"
    return (f"{baselines['split']} {bits_per_byte:.4f} bits/byte; baselines on the same split: "
            + ", ".join(parts) + f" ({verdict})")


def for_run(config, workdir=None, *, dataset=None) -> dict | None:
    """record_baselines of a run's data and held-out split (cached), or None when they cannot
    be computed: a finished run is never lost to its baselines. Multi-process runs skip them:
    rebuilding the dataset on process 0 alone would wait at the store's barrier for the others
    (`lm baselines` computes them on one host). Post-training data (sft, preference) has none."""
    import jax

    if jax.process_count() > 1 or config.data.source in ("sft", "preference"):
        return None  # post-training examples: no held-out text stream to compress
    try:
        return record_baselines(cached_baselines(config, workdir=workdir, dataset=dataset))
    except Exception as err:  # noqa: BLE001 -- reported, never fatal
        import logging

        logging.getLogger(__name__).warning("baselines unavailable: %s: %s", type(err).__name__, err)
        return None
