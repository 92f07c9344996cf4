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

On a dataset (`dataset_baselines`, `for_run`, `lm baselines`) both run on a bounded context,
the end of the train split and the start of the held-out split (TRAIN_CONTEXT_BYTES,
HELDOUT_BYTES), so memory and time do not grow with the corpus; result["context"] says what
was used. Results are cached per dataset, keyed by the token store's checksums.
"""

from __future__ import annotations

import bz2
import hashlib
import json
import lzma
import os
import time
import zlib

import numpy as np

from lm.files import atomic_write

def _lzma_9e(data: bytes) -> bytes:
    """lzma preset 9e with the dictionary cut to the input's size: the same compressed length
    (a dictionary larger than the input holds nothing more), a tenth of preset 9's 674 MB."""
    dict_size = min(64 << 20, max(1 << 16, 1 << max(len(data) - 1, 1).bit_length()))
    return lzma.compress(data, filters=[{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME,
                                         "dict_size": dict_size}])


COMPRESSORS = {
    "zlib-9": lambda b: zlib.compress(b, 9),
    "bz2-9": lambda b: bz2.compress(b, 9),
    "lzma-9e": _lzma_9e,
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



# The bounded context every dataset baseline is computed on, whatever the corpus size: the
# last TRAIN_CONTEXT_BYTES of the train split (the part just before the held-out split, where
# a corpus is cut in two) and the first HELDOUT_BYTES of the held-out split. tiny Shakespeare
# (1.0 MB train, 0.11 MB valid) fits whole; on larger corpora memory and time stay those of
# tiny Shakespeare (where the whole 200 MB corpus took 24 GB). `lm baselines` can raise them.
TRAIN_CONTEXT_BYTES = 1 << 20
HELDOUT_BYTES = 128 << 10


def _context(stream, token_bytes: np.ndarray, max_bytes: int, tail: bool) -> np.ndarray:
    """The last (tail) or first tokens of a split that stand for at most max_bytes bytes; reads
    at most max_bytes tokens (a token stands for a byte or more, so that is enough). A mixture
    (data.mixture): an equal share from each component, so each one's text is in both."""
    parts = getattr(stream, "parts", None)
    if parts:
        return np.concatenate([_context(p, token_bytes, max_bytes // len(parts), tail) for p in parts])
    n = int(stream.num_tokens)
    k = min(n, int(max_bytes))
    ids = stream.span(n - k, n) if tail else stream.span(0, k)
    sizes = token_bytes[ids[::-1] if tail else ids]
    keep = int(np.searchsorted(np.cumsum(sizes), max_bytes, "right"))
    return ids[len(ids) - keep:] if tail else ids[:keep]


def _compressor_input(tok, ids: np.ndarray, vocab_size: int) -> bytes:
    """What the compressors read: the text the tokens stand for (the byte tokenizer's exact
    bytes), or the ids themselves for synthetic sources, which have no text."""
    if tok.name == "byte":
        return np.asarray(ids, np.uint8).tobytes()
    if tok.name == "symbol":
        return tokens_to_bytes(ids, vocab_size)
    return tok.decode(ids).encode("utf-8", "surrogatepass")


def _bounds(train_bytes, heldout_bytes) -> tuple:
    return int(train_bytes or TRAIN_CONTEXT_BYTES), int(heldout_bytes or HELDOUT_BYTES)


def _bounded_splits(dataset, split: str, train_bytes: int, heldout_bytes: int) -> tuple:
    """(train ids, held-out ids, the 'context' entry of the result saying what they are)."""
    tb = np.asarray(dataset.tokenizer.token_bytes, np.float64)
    train_s, held_s = dataset.stream("train"), dataset.stream(split)
    train = _context(train_s, tb, train_bytes, tail=True)
    held = _context(held_s, tb, heldout_bytes, tail=False)
    context = {
        "train_bytes": int(tb[train].sum()), "train_tokens": int(train.size),
        "train_split_tokens": int(train_s.num_tokens),
        "heldout_bytes": int(tb[held].sum()), "heldout_tokens": int(held.size),
        "heldout_split_tokens": int(held_s.num_tokens),
        "train_cap_bytes": int(train_bytes), "heldout_cap_bytes": int(heldout_bytes),
        "capped": bool(train.size < train_s.num_tokens or held.size < held_s.num_tokens),
        "what": "the last train_bytes of the train split (just before the held-out split) and "
                f"the first heldout_bytes of {split!r}",
    }
    return train, held, context


def dataset_baselines(dataset, orders=range(0, 9), split: str = "valid", compressors: bool = True, *,
                      train_bytes: int | None = None, heldout_bytes: int | None = None) -> dict:
    """n-gram and compressor rows for a `lm.data` Dataset, held-out = `split`, on the bounded
    context of `_bounded_splits` (result["context"] says what it was). The bounds default to
    TRAIN_CONTEXT_BYTES and HELDOUT_BYTES, read at call time."""
    train_bytes, heldout_bytes = _bounds(train_bytes, heldout_bytes)
    if split not in dataset.splits:
        raise ValueError(f"split {split!r} not in the dataset's splits {list(dataset.splits)}")
    tok = dataset.tokenizer
    V = int(dataset.vocab_size)
    tb = np.asarray(tok.token_bytes, np.float64)
    train, held, context = _bounded_splits(dataset, split, train_bytes, heldout_bytes)
    t = time.time()
    ngrams = ngram_table(train, held, V, orders, tb)
    result = {
        "split": split, "tokenizer": getattr(tok, "name", type(tok).__name__), "vocab_size": V,
        "train_tokens": int(train.size), "heldout_tokens": int(held.size),
        "heldout_bytes": context["heldout_bytes"], "context": context,
        "ngram": ngrams, "ngram_smoothing": "interpolated modified Kneser-Ney (order 0: add-one unigram)",
        "ngram_seconds": round(time.time() - t, 2),
    }
    entropy_rate = getattr(dataset, "entropy_rate", None)
    if entropy_rate is not None:
        result["entropy_rate_bits_per_symbol"] = float(entropy_rate)
    if compressors:
        result["compressor_input"] = "token ids" if tok.name == "symbol" else "text of the tokens"
        result["compressors"] = compressor_table(_compressor_input(tok, train, V),
                                                 _compressor_input(tok, held, V), float(tb[held].sum()))
    return result


def run_baselines(config, orders=range(0, 9), *, split: str | None = None, workdir=None,
                  compressors: bool = True, dataset=None, **bounds) -> dict:
    """Baselines on an experiment config's data (built with `lm.data.build_dataset` unless
    `dataset` is given). The held-out split defaults to config.experiment.split ('valid');
    n-grams run on the config's tokenizer, compressors on the text of the same tokens.
    bounds: train_bytes / heldout_bytes (see `dataset_baselines`)."""
    from lm import data as lm_data

    split = split or config.experiment.get("split", "valid") or "valid"
    if dataset is None:
        dataset = lm_data.build_dataset(config.data, int(config.model.max_len), workdir=workdir,
                                        seed=int(config.seed))
    result = dataset_baselines(dataset, orders, split, compressors, **bounds)
    result["data"] = config.data.to_dict() if hasattr(config.data, "to_dict") else dict(config.data)
    return result


def format_table(result: dict) -> str:
    """The baselines as a plain-text table (bits per byte of the held-out split)."""
    lines = [f"baselines on split {result['split']!r}: {result['heldout_tokens']} tokens, "
             f"{result['heldout_bytes']} bytes, tokenizer {result['tokenizer']} (V={result['vocab_size']})",
             f"{'model':<28} {'bits/byte':>10} {'bits/token':>11}"]
    if "context" in result:
        lines.insert(1, context_line(result["context"], result["split"]))
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


# ----------------------------------------------------------------------------- beside results

# Short names in records (TEAM.md): conditional compressors (given the train split, as the
# models are), the same alone, and the best Kneser-Ney order as kn<k>.
_SHORT = {"zlib-9": "gzip", "bz2-9": "bz2", "lzma-9e": "lzma"}


def _dataset_key(dataset, split: str, orders, bounds: dict) -> str:
    """sha256 of everything a baseline depends on. Store-backed splits are named by their
    manifest's identity and checksums, so a cache hit reads no token; in-memory splits (synthetic
    sources) by the tokens of their bounded context."""
    h = hashlib.sha256()
    h.update(json.dumps({"split": split, "orders": list(orders), "source": dataset.source,
                         "bounds": bounds, "version": 2}, sort_keys=True).encode())
    tb = np.asarray(dataset.tokenizer.token_bytes, np.float64)
    h.update(tb.tobytes())
    for name, tail, cap in (("train", True, bounds["train_bytes"]), (split, False, bounds["heldout_bytes"])):
        stream = dataset.stream(name)
        if stream.fingerprint is not None:
            h.update(stream.fingerprint.encode())
        else:
            h.update(np.ascontiguousarray(_context(stream, tb, cap, tail), np.int32).tobytes())
    return h.hexdigest()[:16]


def cached_baselines(config, *, split: str | None = None, workdir=None, orders=range(0, 9),
                     dataset=None, train_bytes: int | None = None,
                     heldout_bytes: int | None = None) -> dict:
    """`run_baselines` of config's data, computed once per (dataset, split, bounds) and cached
    as JSON under the data cache dir (data.data_dir / $LM_DATA_DIR / ~/.cache/lm) in baselines/.
    With `dataset` (the run's own) nothing is rebuilt."""
    from lm import data as lm_data
    from lm.data import sources

    split = split or config.experiment.get("split", "valid") or "valid"
    if dataset is None:
        dataset = lm_data.build_dataset(config.data, int(config.model.max_len), workdir=workdir,
                                        seed=int(config.seed))
    train_bytes, heldout_bytes = _bounds(train_bytes, heldout_bytes)
    bounds = {"train_bytes": train_bytes, "heldout_bytes": heldout_bytes}
    key = _dataset_key(dataset, split, orders, bounds)
    path = os.path.join(sources.data_dir(config.data), "baselines", f"{dataset.source}-{split}-{key}.json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        pass
    result = run_baselines(config, orders, split=split, dataset=dataset, **bounds)
    result["key"] = key
    try:
        write_json(result, path)
    except OSError:  # a read-only cache still gives the numbers
        pass
    return result


def record_baselines(result: dict) -> dict:
    """{'split', 'bits_per_byte': {'lzma': .., 'gzip': .., 'bz2': .., 'lzma_alone': .., 'kn8': ..},
    'context': what they were computed on (bytes of train and held-out used, capped or not)}."""
    bpb = {}
    for r in result.get("compressors", []):
        short = _SHORT.get(r["compressor"], r["compressor"])
        bpb[short] = float(r["bits_per_byte"])
        bpb[short + "_alone"] = float(r["unconditional_bits_per_byte"])
    if result.get("ngram"):
        best = best_ngram(result)
        bpb[f"kn{best['order']}"] = float(best["bits_per_byte"])
    out = {"split": result["split"], "bits_per_byte": bpb}
    if "context" in result:
        ctx = result["context"]
        out["context"] = {k: ctx[k] for k in ("train_bytes", "heldout_bytes", "capped",
                                              "train_cap_bytes", "heldout_cap_bytes")}
    return out


def context_line(context: dict, split: str) -> str:
    """'computed on the last 1048576 bytes of train (capped: ...) and the first ... of valid'."""
    ctx = context
    line = (f"computed on the last {ctx['train_bytes']} bytes of train and the first "
            f"{ctx['heldout_bytes']} bytes of {split}")
    if ctx.get("capped"):
        line += (f" (capped at {ctx['train_cap_bytes']} and {ctx['heldout_cap_bytes']} bytes; "
                 "`lm baselines --train_bytes=N --heldout_bytes=M` uses more)")
    return line


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
    line = (f"{baselines['split']} {bits_per_byte:.4f} bits/byte; baselines on the same split: "
            + ", ".join(parts) + f" ({verdict})")
    if baselines.get("context", {}).get("capped"):
        line += "; baselines " + context_line(baselines["context"], baselines["split"])
    return line


def for_run(config, workdir=None, *, dataset=None) -> dict | None:
    """record_baselines of a run's data and held-out split (cached), or None when they cannot
    be computed: a finished run is never lost to its baselines. Memory and time are bounded
    (TRAIN_CONTEXT_BYTES, HELDOUT_BYTES) whatever the corpus size. With `dataset` (the run's
    own) nothing is rebuilt. Without it, multi-process runs skip them: rebuilding the dataset
    on process 0 alone would wait at the store's barrier for the others (`lm baselines`
    computes them on one host). Post-training data (sft, preference) has none."""
    import jax

    if config.data.source in ("sft", "preference"):
        return None  # post-training examples: no held-out text stream to compress
    if dataset is None and jax.process_count() > 1:
        return None
    try:
        return record_baselines(cached_baselines(config, workdir=workdir, dataset=dataset))
    except Exception as err:  # noqa: BLE001 -- reported, never fatal
        import logging

        logging.getLogger(__name__).warning("baselines unavailable: %s: %s", type(err).__name__, err)
        return None
