"""The on-disk token store: a corpus tokenized once, streamed into shards, read by np.memmap.

One store directory holds the token files of one (corpus, tokenizer, token width):

    <split>/shard-00000.bin    tokens, fixed width (uint16 when the vocabulary fits, else uint32)
    <split>/shard-00000.docs   int64: the stream offsets of the documents that start in the shard
    <split>/shard-00000.json   the shard's record, written (atomically) once it is complete
    manifest.json              written last: identity, counts, size / mtime / sha256 of each file

Build: split by split, shard by shard, from `Source.docs(split)`; memory is one text piece and
its tokens. A shard is committed by its .json; a killed build keeps the committed shards and
continues after the last one (re-reading, not re-tokenizing, the source up to there).

Read: a split is a token stream (its shards end to end) with document start offsets; rows and
segment ids are cut from it on the fly (`StoredSplit`, a `batches.PackedSplit`), so a process
reads only the rows it uses. Shards are np.memmap'ed (whole-split access, document offsets);
rows are read with pread (see `_take`: page-cache reads keep RSS flat, a mapping does not).

Opening checks every file's size; sha256 too when the store is small (<= VERIFY_BYTES), when a
file's mtime differs from the manifest's, or when asked (`verify=True`, data.store_verify): a
truncated or altered file is a one-line error naming it. The sha256 is computed while writing,
so a build costs no extra read.

Grain was considered: its value is in multi-worker sampling and record formats; the rows here
are slices of a file and the state is one integer, so a plain reader is simpler and as fast.
"""

from __future__ import annotations

import array
import hashlib
import json
import logging
import os
import time

import numpy as np

from lm.config import ConfigError
from lm.files import atomic_write
from lm.data.batches import PackedSplit
from lm.data.sources import sha256_file

log = logging.getLogger(__name__)
FORMAT = 1
MANIFEST = "manifest.json"
VERIFY_BYTES = 64 << 20
DTYPES = ("auto", "uint16", "uint32")


class StoreError(ValueError):
    """A token store that cannot be used as it is; the message names the file and the way out."""


def dtype_for(vocab_size: int, forced: str = "auto") -> np.dtype:
    if forced not in DTYPES:
        raise ConfigError(f"data.store_dtype={forced!r} is not one of {DTYPES}")
    if forced == "uint16" and vocab_size > 1 << 16:
        raise ConfigError(f"data.store_dtype=uint16 holds at most 65536 token ids, but the vocabulary "
                          f"has {vocab_size}; use data.store_dtype=uint32 (or auto)")
    if forced != "auto":
        return np.dtype(forced)
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


# ----------------------------------------------------------------------------- build

class Progress:
    """Documents, tokens, MB of text, MB/s and ETA: a tqdm bar on a terminal, and a log line
    every `every` seconds (INFO) and at the end."""

    def __init__(self, label: str, total_bytes: float | None = None, every: float = 10.0):
        self.label, self.total, self.every = label, total_bytes, every
        self.docs = self.tokens = self.chars = 0
        self.t0 = self.last = time.time()
        try:
            from tqdm import tqdm

            self.bar = tqdm(total=int(total_bytes) if total_bytes else None, unit="B", unit_scale=True,
                            desc=f"token store {label}", disable=None, leave=False)  # None: only on a tty
        except ImportError:
            self.bar = None

    def update(self, chars: int, tokens: int, docs: int) -> None:
        self.chars += chars
        self.tokens += tokens
        self.docs += docs
        if self.bar is not None:
            self.bar.update(chars)
        if time.time() - self.last >= self.every:
            self.report()

    def report(self, done: bool = False) -> None:
        self.last = now = time.time()
        rate = self.chars / 1e6 / max(now - self.t0, 1e-9)
        eta = ""
        if self.total and not done and rate > 0:
            eta = f", ETA {max(self.total / 1e6 - self.chars / 1e6, 0) / rate:.0f}s"
        if done and self.bar is not None:
            self.bar.close()
        log.info("token store %s%s: %s docs, %.2fM tokens, %.1f MB of text at %.1f MB/s%s",
                 self.label, " done" if done else "", f"{self.docs:,}", self.tokens / 1e6,
                 self.chars / 1e6, rate, eta)


class _ShardWriter:
    """One shard being written: tokens to a .partial file (hashed as written), then renamed."""

    def __init__(self, folder: str, index: int, start: int, docs_before: int, dtype):
        self.folder, self.name = folder, f"shard-{index:05d}"
        self.start, self.docs_before, self.dtype = start, docs_before, dtype
        self.tmp = os.path.join(folder, self.name + ".bin.partial")
        self.f = open(self.tmp, "wb")
        self.sha = hashlib.sha256()
        self.n = 0
        self.doc_starts = array.array("q")  # 8 bytes a document (a list would take ~40)

    def write(self, ids: np.ndarray, new_doc: bool) -> None:
        if new_doc:
            self.doc_starts.append(self.start + self.n)
        data = np.asarray(ids).astype(self.dtype).tobytes()
        self.f.write(data)
        self.sha.update(data)
        self.n += len(ids)

    def commit(self, next_pos) -> dict:
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        os.replace(self.tmp, os.path.join(self.folder, self.name + ".bin"))
        docs = np.frombuffer(self.doc_starts, np.int64).tobytes() if self.doc_starts else b""
        atomic_write(os.path.join(self.folder, self.name + ".docs"), docs)
        rec = {"file": self.name + ".bin", "tokens": self.n, "start": self.start, "docs": len(self.doc_starts),
               "docs_before": self.docs_before, "sha256": self.sha.hexdigest(), "doc_file": self.name + ".docs",
               "doc_sha256": hashlib.sha256(docs).hexdigest(), "next": None if next_pos is None else list(next_pos)}
        atomic_write(os.path.join(self.folder, self.name + ".json"), json.dumps(rec))
        return rec

    def discard(self) -> None:
        self.f.close()
        os.remove(self.tmp)


def _committed(folder: str, itemsize: int) -> list:
    """The shard records of an interrupted build, in order, up to the first incomplete shard."""
    records = []
    while True:
        path = os.path.join(folder, f"shard-{len(records):05d}.json")
        try:
            with open(path) as f:
                rec = json.load(f)
            ok = (os.path.getsize(os.path.join(folder, rec["file"])) == rec["tokens"] * itemsize
                  and os.path.getsize(os.path.join(folder, rec["doc_file"])) == rec["docs"] * 8)
        except (OSError, ValueError, KeyError):
            return records
        if not ok:
            return records
        records.append(rec)


def build_split(folder: str, docs, encode, dtype, shard_tokens: int, progress: Progress,
                on_shard=None) -> list:
    """Tokenizes the documents of one split into shards under `folder`; resumes after the last
    committed shard. Returns the shard records. on_shard(n): called once n shards are committed
    (tests kill the build there)."""
    os.makedirs(folder, exist_ok=True)
    records = _committed(folder, np.dtype(dtype).itemsize)
    if records and records[-1]["next"] is None:
        return records  # finished before the interruption
    resume = tuple(records[-1]["next"]) if records else (0, 0)
    start = records[-1]["start"] + records[-1]["tokens"] if records else 0
    docs_before = records[-1]["docs_before"] + records[-1]["docs"] if records else 0
    writer = None
    for d, doc in enumerate(docs):
        for p, piece in enumerate(doc):
            if (d, p) < resume:
                continue
            if writer is None:
                writer = _ShardWriter(folder, len(records), start, docs_before, dtype)
            ids = encode(piece)
            writer.write(ids, new_doc=p == 0)
            progress.update(len(piece), len(ids), p == 0)
            if writer.n >= shard_tokens:
                records.append(writer.commit((d, p + 1)))
                start, docs_before, writer = start + writer.n, docs_before + len(writer.doc_starts), None
                if on_shard is not None:
                    on_shard(len(records))
    if writer is not None and writer.n:
        records.append(writer.commit(None))
    elif writer is not None:
        writer.discard()
    if records and records[-1]["next"] is not None:  # the split ended exactly at a shard boundary
        records[-1]["next"] = None
        atomic_write(os.path.join(folder, f"shard-{len(records) - 1:05d}.json"), json.dumps(records[-1]))
    progress.report(done=True)
    return records


def build(folder: str, source, encode, dtype, identity: dict, *, shard_tokens: int, on_shard=None) -> dict:
    """Builds (or finishes building) the store of `source` in `folder`; writes the manifest last.
    on_shard: see `build_split`."""
    splits = {}
    for split in source.splits:
        progress = Progress(f"{source.name}/{split}", source.nbytes.get(split))
        records = build_split(os.path.join(folder, split), source.docs(split), encode, dtype,
                              int(shard_tokens), progress, on_shard)
        tokens = sum(r["tokens"] for r in records)
        if not tokens:
            raise StoreError(f"{source.name}: split {split!r} is empty (no text to tokenize)")
        splits[split] = {"tokens": tokens, "docs": sum(r["docs"] for r in records), "shards": records}
    for split, info in splits.items():  # sizes and mtimes as they are now, for the cheap check
        for rec in info["shards"]:
            for key in ("file", "doc_file"):
                st = os.stat(os.path.join(folder, split, rec[key]))
                rec[key + "_bytes"], rec[key + "_mtime_ns"] = st.st_size, st.st_mtime_ns
    manifest = {"format": FORMAT, "identity": identity, "dtype": np.dtype(dtype).name,
                "splits": splits, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write(os.path.join(folder, MANIFEST), json.dumps(manifest, indent=1))
    return manifest


# ----------------------------------------------------------------------------- read

def read_manifest(folder: str, identity: dict) -> dict | None:
    """The finished store's manifest if it was built for `identity`, else None (build it)."""
    path = os.path.join(folder, MANIFEST)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise StoreError(f"token store manifest {path} is unreadable ({e}); delete {folder} to rebuild it") from None
    if manifest.get("format") != FORMAT or manifest.get("identity") != identity:
        return None
    return manifest


def verify(folder: str, manifest: dict, full: bool = False) -> None:
    """Sizes always; sha256 when small, when an mtime changed, or when `full`."""
    files = [(os.path.join(folder, split, rec[key]), rec[key + "_bytes"], rec[key + "_mtime_ns"],
              rec["sha256" if key == "file" else "doc_sha256"])
             for split, info in manifest["splits"].items() for rec in info["shards"] for key in ("file", "doc_file")]
    small = sum(f[1] for f in files) <= VERIFY_BYTES
    way_out = f"delete {folder} to rebuild the store"
    for path, size, mtime, sha in files:
        try:
            st = os.stat(path)
        except OSError:
            raise StoreError(f"token store file {path} is missing; {way_out}") from None
        if st.st_size != size:
            raise StoreError(f"token store file {path} has {st.st_size} bytes, its manifest says {size} "
                             f"(truncated or altered); {way_out}")
        if (full or small or st.st_mtime_ns != mtime) and sha256_file(path) != sha:
            raise StoreError(f"token store file {path} fails its sha256 check (altered or corrupt); {way_out}")


class StoredSplit(PackedSplit):
    """A split of a token store as rows (same interface and rows as an in-memory PackedSplit)."""

    def __init__(self, folder: str, manifest: dict, split: str, seq_len: int, document_masking: bool,
                 name: str = ""):
        info, dtype = manifest["splits"][split], np.dtype(manifest["dtype"])
        shards = info["shards"]
        self._tok = [np.memmap(os.path.join(folder, split, r["file"]), dtype, "r", shape=(r["tokens"],))
                     for r in shards]
        self._doc = [np.memmap(os.path.join(folder, split, r["doc_file"]), np.int64, "r", shape=(r["docs"],))
                     if r["docs"] else np.zeros(0, np.int64) for r in shards]
        self._paths = [os.path.join(folder, split, r["file"]) for r in shards]
        self._dtype, self._itemsize, self._fds = dtype, dtype.itemsize, {}
        self._starts = np.array([r["start"] for r in shards], np.int64)
        self._docs_before = np.array([r["docs_before"] for r in shards], np.int64)
        self.num_docs = info["docs"]
        self.fingerprint = hashlib.sha256(json.dumps(
            [manifest["identity"], manifest["dtype"], split, [r["sha256"] for r in shards]],
            sort_keys=True).encode()).hexdigest()
        self._setup(info["tokens"], seq_len, document_masking, name or split)

    MAX_OPEN = 64  # shard files kept open for reading rows

    def _fd(self, s: int) -> int:
        fd = self._fds.pop(s, None)
        if fd is None:
            if len(self._fds) >= self.MAX_OPEN:
                os.close(self._fds.pop(next(iter(self._fds))))
            fd = os.open(self._paths[s], os.O_RDONLY)
        self._fds[s] = fd  # most recently used last
        return fd

    def _read(self, lo: int, hi: int) -> np.ndarray:
        """Tokens [lo, hi) of the stream, across shard boundaries."""
        parts, s = [], int(np.searchsorted(self._starts, lo, "right") - 1)
        while lo < hi:
            end = min(hi, int(self._starts[s]) + len(self._tok[s]))
            data = os.pread(self._fd(s), (end - lo) * self._itemsize, (lo - int(self._starts[s])) * self._itemsize)
            parts.append(np.frombuffer(data, self._dtype))
            lo, s = end, s + 1
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def span(self, lo: int, hi: int) -> np.ndarray:
        return self._read(lo, hi).astype(np.int32) if hi > lo else np.zeros(0, np.int32)

    def _take(self, idx: np.ndarray, docs: bool) -> tuple:
        # Rows are read with pread, not through the memmap: pages of a mapping count in the
        # process's RSS (the kernel maps large folios around each fault: 1.1 GB after seconds of
        # random rows over a 2 GB store), page-cache reads do not.
        idx = np.asarray(idx, np.int64)
        toks = np.empty(idx.shape, np.int32)
        for r, row in enumerate(idx):
            lo = int(row[0])
            toks[r] = self._read(lo, int(row[-1]) + 1)[row - lo]
        ids = None
        if docs:
            flat = idx.ravel()
            shard = np.searchsorted(self._starts, flat, "right") - 1
            ids = np.empty(flat.shape, np.int32)
            for s in np.unique(shard):  # a document that began in an earlier shard has id docs_before - 1
                at = shard == s
                ids[at] = self._docs_before[s] + np.searchsorted(self._doc[s], flat[at], "right") - 1
            ids = ids.reshape(idx.shape)
        return toks, ids

    def __del__(self, _close=os.close):  # bound now: at interpreter exit os.close may be gone
        for fd in getattr(self, "_fds", {}).values():
            _close(fd)

    @property
    def tokens(self) -> np.ndarray:
        """The whole split as int32 (materialised: for baselines and tests, not for training)."""
        return np.concatenate([np.asarray(t, np.int32) for t in self._tok])

    @property
    def doc_ids(self) -> np.ndarray:
        return self._take(np.arange(self.num_tokens)[None], True)[1][0]
