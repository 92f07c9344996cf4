"""Text source -> tokenizer -> token store, once per corpus and settings, safe across processes.

    tokenizer, splits = prepare_text(cfg, source, seq_len, workdir=...)

Identity: `spec` = (hash of the source identity, tokenizer kind, vocab size and sample size).
The store lives in STORE_DIR/<source>-<hash(spec)>/: tokenizer/ (trained once, saved with
its spec) and tokens-<tokenizer fingerprint>-<dtype>/ (see store.py). Different data or
settings give a different directory, so nothing stale is read.

The workdir keeps a copy of the tokenizer with its spec. A workdir tokenizer made for other
data or settings (another source, data.vocab_size, ...) is replaced when no checkpoint uses it
(a failed first run), and refused with a one-line error when one does.

Concurrency: the build runs under a file lock (fcntl) per store, so processes sharing a
machine build once and the rest wait and open; across hosts (jax.process_count() > 1)
process 0 prepares first and the others wait at a barrier, then open it (or, on a host-local
data dir, build their own identical copy).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import sys

import numpy as np

from lm.config import ConfigError
from lm.data import store
from lm.data.sources import data_dir
from lm.data.tokenizers import (ByteTokenizer, CharTokenizer, SentencePieceTokenizer, Tokenizer, fingerprint,
                                load_tokenizer, saved_meta)

log = logging.getLogger(__name__)
DEFAULT_SPM_VOCAB = 1024
SAMPLE_BLOCK = 1 << 16  # sentencepiece samples blocks of about this many characters


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def store_dir(cfg) -> str:
    return os.path.expanduser(cfg.store_dir) if cfg.store_dir else os.path.join(data_dir(cfg), "store")


def tokenizer_spec(cfg, source) -> dict:
    """What the tokenizer (and so the tokens) depend on."""
    spec = {"source": _hash(source.identity), "tokenizer": cfg.tokenizer}
    if cfg.tokenizer == "sentencepiece":
        spec.update(vocab_size=int(cfg.vocab_size or DEFAULT_SPM_VOCAB),
                    sample_chars=int(cfg.tokenizer_sample_chars))
    return spec


@contextlib.contextmanager
def file_lock(path: str):
    """An exclusive lock held while the block runs (waits for other holders)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _processes() -> tuple:
    if "jax" not in sys.modules:  # data used without jax: one process
        return 0, 1
    import jax

    return jax.process_index(), jax.process_count()


def _barrier(name: str) -> None:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


# ----------------------------------------------------------------------------- tokenizers

def sample_text(docs, max_chars: int, seed: int = 0) -> str:
    """The whole text if it has at most `max_chars` characters, else blocks of about
    SAMPLE_BLOCK characters (cut after newlines) drawn uniformly across all of it (reservoir
    sampling, seeded), in corpus order. Memory: about 2 * max_chars."""
    rng = np.random.default_rng(seed)
    slots = max(1, max_chars // SAMPLE_BLOCK)
    head, reservoir, total, seen, buf = [], {}, 0, 0, ""

    def add(block):
        nonlocal total, seen
        total += len(block)
        if total <= max_chars:
            head.append(block)
        else:
            head.clear()
        j = seen if seen < slots else int(rng.integers(0, seen + 1))
        if j < slots:
            reservoir[j] = (seen, block)
        seen += 1

    for doc in docs:
        for piece in doc:
            buf += piece
            while len(buf) >= SAMPLE_BLOCK:
                cut = buf.rfind("\n", SAMPLE_BLOCK // 2, 2 * SAMPLE_BLOCK) + 1 or SAMPLE_BLOCK
                add(buf[:cut])
                buf = buf[cut:]
    if buf:
        add(buf)
    if total <= max_chars:
        return "".join(head)
    return "".join(block for _, block in sorted(reservoir.values()))


def train_tokenizer(cfg, source) -> Tokenizer:
    kind = cfg.tokenizer
    if kind == "byte":
        return ByteTokenizer()
    if kind == "char":  # one pass per split: the characters seen
        seen = {split: set() for split in source.splits}
        for split, chars in seen.items():
            for doc in source.docs(split):
                for piece in doc:
                    chars.update(piece)
        return CharTokenizer.from_splits("".join(seen.pop("train")), ["".join(c) for c in seen.values()])
    vocab = int(cfg.vocab_size or DEFAULT_SPM_VOCAB)
    if vocab < 260:  # 256 byte pieces + <unk> + newline + a couple of pieces
        raise ConfigError(f"data.vocab_size={vocab} is too small for sentencepiece with byte fallback (min 260)")
    text = sample_text(source.docs("train"), int(cfg.tokenizer_sample_chars))
    return SentencePieceTokenizer.train(text, vocab, max_chars=len(text))


def small_corpus_tokenizer(cfg, source, workdir: str | None) -> Tokenizer:
    """The tokenizer of a corpus small enough to need no store (post-training examples): the
    workdir's if it was made for this data, else trained on it and saved there."""
    if cfg.tokenizer == "hf":
        return _hf_tokenizer(workdir)
    spec = tokenizer_spec(cfg, source)
    tok = workdir_tokenizer(workdir, spec, cfg.tokenizer, legacy_source(source)) or train_tokenizer(cfg, source)
    if workdir:
        _save_to_workdir(tok, workdir, spec, legacy_source(source))
    return tok


def _hf_tokenizer(workdir: str | None) -> Tokenizer:
    """data.tokenizer='hf': the pretrained model's tokenizer, put into the workdir by `lm import`
    or the init_from config key (lm/hf); it is never trained from the data."""
    saved = os.path.join(workdir, "tokenizer") if workdir else ""
    if not saved or not os.path.isdir(saved):
        raise ConfigError("data.tokenizer='hf' uses the tokenizer of a pretrained model: it comes "
                          "with `lm import` or the init_from config key, not from the data")
    tok = load_tokenizer(saved)
    if tok.name != "hf":
        raise ConfigError(f"{saved} holds a {tok.name} tokenizer but data.tokenizer='hf'")
    return tok


def legacy_source(source) -> str | None:
    """spec["source"] as older lm wrote it (files by mtime, not content), so that a workdir
    tokenizer saved then is still recognised; None where it did not differ."""
    legacy = getattr(source, "legacy_identity", None)
    return None if legacy is None else _hash(legacy)


def _has_checkpoints(workdir: str) -> bool:
    folder = os.path.join(workdir, "checkpoints")
    return os.path.isdir(folder) and any(n.isdigit() for n in os.listdir(folder))


def _describe(old: dict, new: dict) -> str:
    names = {"source": "the data (source or its files)", "tokenizer": "data.tokenizer",
             "vocab_size": "data.vocab_size", "sample_chars": "data.tokenizer_sample_chars"}
    diffs = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            what = names.get(key, key)
            diffs.append(what if key == "source" else f"{what}={old.get(key)!r}, now {new.get(key)!r}")
    return "; ".join(diffs)


def workdir_tokenizer(workdir: str | None, spec: dict, kind: str, legacy: str | None = None) -> Tokenizer | None:
    """The workdir's tokenizer if it was made for `spec` (or for spec with source `legacy`, the
    same data as an older lm identified it); None if absent or stale and unused."""
    if not workdir:
        return None
    saved = os.path.join(workdir, "tokenizer")
    if not os.path.isdir(saved):
        return None
    used = _has_checkpoints(workdir)
    try:
        meta = saved_meta(saved)
        tok = load_tokenizer(saved)
    except (FileNotFoundError, ValueError) as e:
        if used:
            raise ValueError(f"{e} (the checkpoints in {workdir} were trained with it)") from None
        log.warning("%s; replacing it", e)
        return None
    old = meta.get("data")
    if old == spec or (legacy is not None and old == dict(spec, source=legacy)):
        return tok
    if old is None and used:  # saved by an older lm: no identity to compare, keep using it
        if meta.get("kind") != kind:
            raise ConfigError(f"{saved} holds a {meta.get('kind')} tokenizer but data.tokenizer={kind!r}")
        log.warning("%s has no data identity (saved by an older lm); reusing it", saved)
        return tok
    if used:
        raise ConfigError(f"{saved} was made for other data settings than this config ("
                          f"{_describe(old, spec) if old else 'unknown'}) and the checkpoints in {workdir} "
                          "were trained with it; use a new --workdir, or the settings the run started with")
    log.warning("%s was made for other data settings (%s) and no checkpoint uses it: replacing it",
                saved, _describe(old, spec) if old else "unknown")
    return None


def _store_tokenizer(cfg, source, root: str, spec: dict, from_workdir) -> Tokenizer:
    if from_workdir is not None:
        return from_workdir
    saved = os.path.join(root, "tokenizer")
    if os.path.isdir(saved):
        try:
            if saved_meta(saved).get("data") == spec:
                return load_tokenizer(saved)
        except ValueError as e:
            log.warning("%s; retraining it", e)
    tok = train_tokenizer(cfg, source)
    store.dtype_for(tok.vocab_size, cfg.store_dtype)  # refuse before anything is written
    if tok.name in ("char", "sentencepiece"):  # byte: nothing to train
        tok.save(saved, extra={"data": spec})
    return tok


# ----------------------------------------------------------------------------- the store

def _prepare(cfg, source, seq_len: int, workdir: str | None, masking: bool) -> tuple:
    for key in ("shard_tokens", "tokenizer_sample_chars"):
        if int(cfg[key]) < 1:
            raise ConfigError(f"data.{key}={cfg[key]} must be positive")
    spec = tokenizer_spec(cfg, source)
    hf_tok = _hf_tokenizer(workdir) if cfg.tokenizer == "hf" else None
    if hf_tok is not None:  # the store is per pretrained tokenizer too
        spec["hf"] = fingerprint(hf_tok)
    if cfg.tokenizer == "sentencepiece":  # refuse an impossible width before training
        store.dtype_for(spec["vocab_size"], cfg.store_dtype)
    root = os.path.join(store_dir(cfg), f"{source.name}-{_hash(spec)}")
    lock = os.path.join(store_dir(cfg), ".locks", os.path.basename(root) + ".lock")
    parts = getattr(source, "components", None) or [source]  # a mixture: one store per component
    with file_lock(lock):
        existed = os.path.isdir(root)
        folders, manifests = [], []
        try:
            tok = hf_tok if hf_tok is not None else _store_tokenizer(
                cfg, source, root, spec,
                workdir_tokenizer(workdir, spec, cfg.tokenizer, legacy_source(source)))
            dtype = store.dtype_for(tok.vocab_size, cfg.store_dtype)
            for part in parts:
                suffix = "" if part is source else f"-{_hash(part.identity)}"
                folders.append(os.path.join(root, f"tokens-{fingerprint(tok)}-{dtype.name}{suffix}"))
                identity = {"source": part.identity, "spec": spec, "tokenizer": fingerprint(tok),
                            "vocab_size": tok.vocab_size}
                manifest = store.read_manifest(folders[-1], identity)
                if manifest is None:
                    if os.path.exists(os.path.join(folders[-1], store.MANIFEST)):  # made for other data
                        shutil.rmtree(folders[-1])
                    manifest = store.build(folders[-1], part, tok.encode_corpus, dtype, identity,
                                           shard_tokens=int(cfg.shard_tokens))
                store.verify(folders[-1], manifest, full=bool(cfg.store_verify))
                manifests.append(manifest)
        except Exception:  # bad input: leave nothing half-written (a kill keeps it, to resume)
            if not existed:
                shutil.rmtree(root, ignore_errors=True)
            for folder in folders:
                if not os.path.exists(os.path.join(folder, store.MANIFEST)):
                    shutil.rmtree(folder, ignore_errors=True)
            raise
    if workdir:
        _save_to_workdir(tok, workdir, spec, legacy_source(source))
    stored = [{name: store.StoredSplit(folder, m, name, seq_len, masking, f"{part.name}/{name}")
               for name in m["splits"]} for folder, m, part in zip(folders, manifests, parts)]
    if len(stored) == 1:
        return tok, stored[0]
    from lm.data.mixture import MixtureSplit

    names = [n for n in stored[0] if all(n in s for s in stored)]
    return tok, {n: MixtureSplit([s[n] for s in stored], source.weights) for n in names}


def _save_to_workdir(tok: Tokenizer, workdir: str, spec: dict, legacy: str | None = None) -> None:
    """Saves the tokenizer with its spec unless the workdir holds it already: checked before the
    lock too, so that reading a workdir (lm eval, lm sample) never needs write access to it. One
    saved under the older identity (`legacy`) gets the new one where the workdir is writable."""
    saved = os.path.join(workdir, "tokenizer")

    def data():
        try:
            return saved_meta(saved).get("data", None), True
        except (FileNotFoundError, ValueError):
            return None, False

    def current() -> bool:
        old, found = data()
        return found and (old == spec or (old is None and _has_checkpoints(workdir)))

    if current():
        return
    try:
        with file_lock(os.path.join(workdir, ".tokenizer.lock")):
            if not current():
                tok.save(saved, extra={"data": spec})
    except OSError:
        if legacy is None or data()[0] != dict(spec, source=legacy):
            raise
        log.info("%s: read-only, keeping its tokenizer's older data identity", workdir)


def prepare_text(cfg, source, seq_len: int, *, workdir: str | None = None, masking: bool = False) -> tuple:
    """(tokenizer, {split: StoredSplit}) for a text source, building the store if needed."""
    index, count = _processes()
    if count > 1 and index != 0:
        _barrier("lm.data.prepare")  # process 0 builds first
        return _prepare(cfg, source, seq_len, workdir, masking)
    out = _prepare(cfg, source, seq_len, workdir, masking)
    if count > 1:
        _barrier("lm.data.prepare")
    return out
