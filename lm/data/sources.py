"""Text sources as streams: `open_source(cfg, strict)` -> a `Source` whose `docs(split)` yields
documents as pieces of text (files of any size, `datasets` streaming for tables and the hub),
never the whole corpus in memory; `load_text` materialises one (small corpora, tests).

Splits (fixed, deterministic):
- tinyshakespeare: first 90% / last 10% of the characters (cut at int(0.9 n), nanoGPT's split).
- enwik8: bytes [0, 90M) / [90M, 95M) / [95M, 100M) = train / valid / test (Transformer-XL).
  A smaller local file (e.g. enwik8_first1M.gz) is split in the same proportions, with a warning.
- stdlib: the running Python's standard-library .py files (no tests, no site-packages), at most
  STDLIB_MAX_BYTES of them chosen in sha1(relative path) order; a file is in valid when
  sha1(relative path) % 20 == 0 (about 5% of files). Each file is a document.
- files / hf without split files: the trailing documents holding the last 10% of the
  characters are valid; a document straddling the cut is cut at the 90% character mark.
  (On a stream this takes one extra pass to count the characters, at build time only.)
- hf: data.hf_name is a hub dataset (streamed, `streaming=True`) or a local dataset directory
  (e.g. train.jsonl + validation.jsonl), read the same way; splits train / validation / test.

files: data.path is a file, a directory (every supported file under it) or a glob; or split files
as 'train=GLOB,valid=GLOB[,test=GLOB]', or a directory whose files are named train*/valid*/test*.
.jsonl/.json/.parquet/.csv go through `datasets` (one document per row, column data.text_field);
plain text (.txt, .md, .py, .gz, or any file named directly) is one document per file, read here so
that invalid UTF-8 is reported with its file and byte offset (and kept exact for the byte tokenizer).

Named corpora are found at data.path, else in the data dir (data.data_dir, $LM_DATA_DIR,
~/.cache/lm), else downloaded there (verified before the atomic rename; LM_OFFLINE=1 or
HF_DATASETS_OFFLINE=1 skips the attempt).
"""

from __future__ import annotations

import contextlib
import glob
import gzip
import hashlib
import itertools
import json
import logging
import os
import socket
import sysconfig
import tempfile
import urllib.request
import zipfile
import zlib

log = logging.getLogger(__name__)
VALID_FRACTION = 0.1
STDLIB_MAX_BYTES = 4_000_000
TEXT_EXTS = (".txt", ".text", ".md", ".py", ".gz")
TABLE_EXTS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
SPLIT_ALIASES = {"train": "train", "valid": "valid", "validation": "valid", "val": "valid",
                 "dev": "valid", "test": "test"}

TINYSHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
ENWIK8_URL = "http://mattmahoney.net/dc/enwik8.zip"
ENWIK8_SHA256 = "2b49720ec4d78c3c9fabaee6e4179a5e997302b3a70029f30f2d582218c024a8"
ENWIK8_SIZE = 100_000_000

_OFFLINE_VARS = ("LM_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")


def data_dir(cfg) -> str:
    """Where downloads and token caches live: data.data_dir, else $LM_DATA_DIR, else ~/.cache/lm."""
    return os.path.expanduser(cfg.data_dir or os.environ.get("LM_DATA_DIR") or "~/.cache/lm")


def offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in _OFFLINE_VARS)


def download(url: str, dest: str, *, timeout: float = 10.0, verify=None) -> str:
    """Downloads `url` to `dest` (temp file + atomic rename). Raises OSError when offline.

    `verify(temp_path)` may raise to reject the download before it enters the cache.
    """
    if offline():
        raise OSError(f"offline ({'/'.join(_OFFLINE_VARS)} set): not downloading {url}")
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".download-", dir=os.path.dirname(dest))
    try:
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=timeout) as r:
            while chunk := r.read(1 << 20):
                f.write(chunk)
        if verify:
            verify(tmp)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dest


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode(data: bytes, name: str, strict: bool, offset: int = 0) -> str:
    """UTF-8 text; with strict=False invalid bytes survive as surrogates (exact for bytes).
    `offset`: where `data` starts in the file (for the error message)."""
    if not strict:
        return data.decode("utf-8", "surrogateescape")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{name} is not valid UTF-8 (byte {offset + e.start}: {data[e.start:e.start + 4]!r}); "
                         "text tokenizers (char, sentencepiece) need UTF-8, the byte tokenizer "
                         "(data.tokenizer=byte) reads any bytes") from None


def read_bytes(path: str) -> bytes:
    """The file's bytes; gzip and single-file zip archives are decompressed."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"data file not found: {path}")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic[:2] == b"\x1f\x8b":  # gzip, by content (downloads land in temp files with no suffix)
        with gzip.open(path, "rb") as f:
            data = f.read()
    elif magic == b"PK\x03\x04":
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if not n.endswith("/")]
            if len(names) != 1:
                raise ValueError(f"{path}: expected one file in the zip, found {names}")
            data = z.read(names[0])
    else:
        with open(path, "rb") as f:
            data = f.read()
    if not data:
        raise ValueError(f"data file is empty: {path}")
    return data


def split_documents(docs: list, fraction: float = VALID_FRACTION) -> dict:
    """The trailing `fraction` of the characters goes to valid (see module docstring)."""
    total = sum(len(d) for d in docs)
    cut = int(total * (1 - fraction))
    train, valid, seen = [], [], 0
    for d in docs:
        if seen + len(d) <= cut:
            train.append(d)
        elif seen >= cut:
            valid.append(d)
        else:
            train.append(d[:cut - seen])
            valid.append(d[cut - seen:])
        seen += len(d)
    return {"train": [d for d in train if d], "valid": [d for d in valid if d]}


# ----------------------------------------------------------------------------- streams

CHUNK_BYTES = 4 << 20  # text files are read in pieces of about this size, cut after a newline


class Source:
    """A corpus as re-iterable streams, never whole in memory.

    `docs(split)` yields documents; each document is an iterable of str pieces, read to its end
    before the next document is asked for. Pieces end at newlines where the text has them, so a
    line-based tokenizer (sentencepiece) sees exactly the lines of the whole text. `identity`
    (JSON-able: file names, sizes and content hashes, hub names) says which corpus this is; the
    token store is keyed by its hash. `open()` (the splits) may read or download; identity never
    downloads (it hashes local files once, see `file_identity`).
    """

    def __init__(self, name: str, identity: dict, opener, nbytes=None, legacy_identity=None):
        self.name = name
        self.identity = identity
        self.legacy_identity = legacy_identity  # files by mtime (older lm), or None
        self._opener = opener  # () -> {split: () -> iterator of documents}
        self._splits = None
        self.nbytes = nbytes or {}  # split -> approximate size (progress ETA), where known

    def open(self) -> dict:
        if self._splits is None:
            self._splits = self._opener()
        return self._splits

    @property
    def splits(self) -> tuple:
        return tuple(self.open())

    def docs(self, split: str):
        return self.open()[split]()

    def text(self, split: str) -> str:
        return "".join(p for d in self.docs(split) for p in d)

    @classmethod
    def from_docs(cls, name: str, identity: dict, load):
        """A small corpus that `load()` returns whole as {split: [str]} (named corpora)."""
        return cls(name, identity, lambda: {k: (lambda v=v: ((d,) for d in v)) for k, v in load().items()})


def split_streams(docs_fn, fraction: float = VALID_FRACTION) -> dict:
    """`split_documents` on a stream: {'train', 'valid'} stream makers. The character count
    takes one extra pass over the stream (only when a split is read)."""
    total = []

    def cut():
        if not total:
            total.append(sum(len(p) for d in docs_fn() for p in d))
        return int(total[0] * (1 - fraction))

    def train():
        c, seen = cut(), [0]

        def clip(doc):
            for p in doc:
                a = seen[0]
                seen[0] += len(p)
                if a >= c:
                    return
                yield p if seen[0] <= c else p[:c - a]

        for doc in docs_fn():
            if seen[0] >= c:
                return
            yield clip(doc)

    def valid():
        c, seen = cut(), 0
        for doc in docs_fn():
            it = iter(doc)
            for p in it:  # skip the part before the cut; what follows it is a valid document
                a, seen = seen, seen + len(p)
                if seen > c:
                    yield itertools.chain((p[max(c - a, 0):],), it)
                    break

    return {"train": train, "valid": valid}


@contextlib.contextmanager
def _open_binary(path: str):
    """The file as a binary stream; gzip and single-file zip archives are decompressed."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"data file not found: {path}")
    with open(path, "rb") as f:
        magic = f.read(4)
    with contextlib.ExitStack() as stack:
        if magic[:2] == b"\x1f\x8b":  # gzip, by content (downloads land in temp files with no suffix)
            f = stack.enter_context(gzip.open(path, "rb"))
        elif magic == b"PK\x03\x04":
            z = stack.enter_context(zipfile.ZipFile(path))
            names = [n for n in z.namelist() if not n.endswith("/")]
            if len(names) != 1:
                raise ValueError(f"{path}: expected one file in the zip, found {names}")
            f = stack.enter_context(z.open(names[0]))
        else:
            f = stack.enter_context(open(path, "rb"))
        yield f


def _char_start(data: bytes) -> int:
    """The last position in `data` that does not split a UTF-8 character."""
    for i in range(len(data) - 1, max(len(data) - 5, 0), -1):
        if data[i] & 0xC0 != 0x80:
            return i
    return len(data)


def text_pieces(path: str, strict: bool):
    """A text file as decoded pieces (joined: the whole file), each ending after a newline when
    one comes within 4 * CHUNK_BYTES, and never inside a UTF-8 character."""
    offset, carry = 0, b""
    with _open_binary(path) as f:
        while True:
            try:
                block = f.read(CHUNK_BYTES)
            except (EOFError, OSError, zlib.error) as e:
                raise ValueError(f"{path}: cannot read past byte {offset + len(carry)} ({e}); "
                                 "is the file truncated or corrupt?") from None
            if not block:
                break
            data = carry + block
            cut = data.rfind(b"\n") + 1
            if not cut:
                if len(data) < 4 * CHUNK_BYTES:
                    carry = data
                    continue
                cut = _char_start(data)
            yield decode(data[:cut], path, strict, offset)
            offset, carry = offset + cut, data[cut:]
    if carry:
        yield decode(carry, path, strict, offset)
        offset += len(carry)
    if not offset:
        raise ValueError(f"data file is empty: {path}")


def _rows(rows, where: str):
    """datasets' rows; a malformed file (its parser raises a bare 'JSON parse error ...') is a
    ValueError naming the file. datasets also logs that error: the line is dropped, ours says it."""
    import logging

    logger = logging.getLogger("datasets.packaged_modules.json.json")  # where it logs from
    if not any(isinstance(f, _DropParseLog) for f in logger.filters):
        logger.addFilter(_DropParseLog())
    it = iter(rows)
    while True:
        try:
            row = next(it)
        except StopIteration:
            return
        except (ValueError, TypeError, OSError) as e:  # pyarrow's ArrowInvalid is a ValueError
            raise ValueError(f"{where}: cannot read it ({e})") from e
        except Exception as e:  # datasets' DatasetGenerationError and friends
            raise ValueError(f"{where}: cannot read it ({type(e).__name__}: {e})") from e
        yield row


class _DropParseLog:
    def filter(self, record) -> bool:
        return not record.getMessage().startswith("Failed to load JSON from file")


def _field_docs(rows, field: str, where: str):
    """One document per row: its non-empty `field` value."""
    n = 0
    for row in _rows(rows, where):
        if field not in row:
            raise ValueError(f"{where}: no column data.text_field={field!r}; columns: {list(row)}")
        text = row[field]
        if text:
            if not isinstance(text, str):
                raise ValueError(f"{where}: column data.text_field={field!r} holds {type(text).__name__}, not text")
            n += 1
            yield (text,)
    if not n:
        raise ValueError(f"{where}: no non-empty {field!r} values")


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


HASH_CACHE = "file-sha256.json"  # in the data dir: {path: [size, mtime_ns, sha256]}


def file_identity(files, cache_dir: str | None = None) -> list:
    """[path, size, sha256] per file: a file whose bytes change gets a new token store, one that is
    only touched or re-copied (same bytes, new mtime) keeps its store and its runs resumable.
    Hashes are cached in cache_dir/HASH_CACHE by (path, size, mtime), so an unchanged file is
    read once; the cache is skipped where it cannot be written (a read-only data dir)."""
    cache_path = os.path.join(cache_dir, HASH_CACHE) if cache_dir else None
    cache = {}
    if cache_path:
        try:
            with open(cache_path) as f:
                cache = json.load(f)
        except (OSError, ValueError):
            cache = {}
    out, changed = [], False
    for f in files:
        path, st = os.path.abspath(f), os.stat(f)
        hit = cache.get(path)
        if hit and hit[:2] == [st.st_size, st.st_mtime_ns]:
            sha = hit[2]
        else:
            sha, changed = sha256_file(path), True
            cache[path] = [st.st_size, st.st_mtime_ns, sha]
        out.append([path, st.st_size, sha])
    if changed and cache_path:
        from lm.files import atomic_write

        try:
            atomic_write(cache_path, json.dumps(cache))
        except OSError:
            pass
    return out


def mtime_identity(files) -> list:
    """[path, size, mtime_ns] per file: the identity lm used before content hashes, so that a
    workdir whose tokenizer was saved with it is still recognised."""
    return [[os.path.abspath(f), st.st_size, st.st_mtime_ns] for f, st in ((f, os.stat(f)) for f in files)]


# ----------------------------------------------------------------------------- local files

def _expand(pattern: str) -> list:
    """A file, a directory (all supported files under it) or a glob -> sorted file list."""
    pattern = os.path.expanduser(pattern)
    if os.path.isfile(pattern):
        return [pattern]
    if os.path.isdir(pattern):
        exts = TEXT_EXTS + tuple(TABLE_EXTS)
        files = sorted(p for p in glob.glob(os.path.join(pattern, "**", "*"), recursive=True)
                       if os.path.isfile(p) and p.endswith(exts))
        if not files:
            raise FileNotFoundError(f"data.path={pattern!r}: directory has no data files "
                                    f"(looked for {', '.join(exts)})")
        return files
    files = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
    if not files:
        what = "no files match the glob" if glob.has_magic(pattern) else "no such file or directory"
        raise FileNotFoundError(f"data.path={pattern!r}: {what}")
    return files


def _table_docs(files: list, builder: str, field: str):
    import datasets  # streamed: rows are read in batches, never the whole table

    rows = datasets.load_dataset(builder, data_files=files, split="train", streaming=True)
    return _field_docs(rows, field, files[0] if len(files) == 1 else f"{files[0]} (+{len(files) - 1} files)")


def _file_docs(files: list, cfg, strict: bool):
    """Table rows (grouped by format) first, then one document per plain text file."""
    for builder in sorted(set(TABLE_EXTS.values())):
        group = [f for f in files if TABLE_EXTS.get(os.path.splitext(f)[1]) == builder]
        if group:
            yield from _table_docs(group, builder, cfg.text_field)
    for f in files:
        if os.path.splitext(f)[1] not in TABLE_EXTS:
            yield text_pieces(f, strict)


def _split_spec(path: str):
    """'train=GLOB,valid=GLOB[,test=GLOB]' or a directory with train*/valid*/test* files."""
    if "=" in path:
        spec = {}
        for part in path.split(","):
            name, _, pattern = part.partition("=")
            if name.strip() not in SPLIT_ALIASES:
                raise ValueError(f"data.path={path!r}: unknown split {name!r}; use train=,valid=,test=")
            spec[SPLIT_ALIASES[name.strip()]] = pattern.strip()
        return spec
    if os.path.isdir(path):
        spec = {}
        for f in _expand(path):
            stem = os.path.basename(f).split(".")[0].split("-")[0].split("_")[0].lower()
            if stem in SPLIT_ALIASES:
                spec.setdefault(SPLIT_ALIASES[stem], []).append(f)
        if "train" in spec and len(spec) > 1:
            return spec
    return None


def open_files(cfg, strict: bool) -> Source:
    if not cfg.path:
        raise ValueError("data.source=files needs data.path (a file, directory or glob)")
    spec = _split_spec(cfg.path)
    if spec:
        if "train" not in spec or len(spec) < 2:
            raise ValueError(f"data.path={cfg.path!r}: split files need train and valid (or test)")
        files = {name: p if isinstance(p, list) else _expand(p) for name, p in spec.items()}
        if "valid" not in files:
            files["valid"] = files.pop("test")
        opener = lambda: {name: (lambda fs=fs: _file_docs(fs, cfg, strict)) for name, fs in files.items()}
    else:
        everything = _expand(cfg.path)
        files = {"all": everything}
        opener = lambda: split_streams(lambda: _file_docs(everything, cfg, strict))
    identity = {"kind": "files", "files": {k: file_identity(v, data_dir(cfg)) for k, v in files.items()},
                "text_field": cfg.text_field}
    legacy = dict(identity, files={k: mtime_identity(v) for k, v in files.items()})
    nbytes = {k: sum(os.path.getsize(f) for f in v) for k, v in files.items()}
    if "all" in nbytes:
        nbytes = {"train": nbytes["all"] * (1 - VALID_FRACTION), "valid": nbytes["all"] * VALID_FRACTION}
    return Source("files", identity, opener, nbytes, legacy_identity=legacy)


# ----------------------------------------------------------------------------- hub datasets

def _hub_reachable(host="huggingface.co", timeout=3.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def open_hf(cfg) -> Source:
    """A hub dataset streamed (`streaming=True`: rows arrive as they are read). data.hf_name may
    also be a local dataset directory (e.g. train.jsonl + validation.jsonl), read the same way."""
    if not cfg.hf_name:
        raise ValueError("data.source=hf needs data.hf_name (a Hugging Face hub dataset name)")
    local = os.path.expanduser(cfg.hf_name)
    local = local if os.path.isdir(local) else None
    identity = {"kind": "hf", "name": cfg.hf_name, "config": cfg.hf_config, "text_field": cfg.text_field}
    legacy = None
    if local:
        files = sorted(p for p in glob.glob(os.path.join(local, "**", "*"), recursive=True) if os.path.isfile(p))
        legacy = dict(identity, files=mtime_identity(files))
        identity["files"] = file_identity(files, data_dir(cfg))

    def opener():
        hint = (f"data.source=hf (data.hf_name={cfg.hf_name!r}) needs the Hugging Face hub, which is "
                "not reachable ({why}). Use local files instead: data.source=files "
                "data.path=/path/to/files (.txt, .jsonl, .parquet, .csv; a directory or glob; "
                "or 'train=GLOB,valid=GLOB').")
        if not local and offline():
            raise ConnectionError(hint.format(why="offline mode: " + "/".join(_OFFLINE_VARS) + " is set"))
        if not local and not _hub_reachable():
            raise ConnectionError(hint.format(why="no network connection to huggingface.co"))
        import datasets

        ds = datasets.load_dataset(local or cfg.hf_name, cfg.hf_config or None, streaming=True)
        out = {}
        for name, split in ds.items():
            if name in SPLIT_ALIASES and SPLIT_ALIASES[name] not in out:
                where = f"hf dataset {cfg.hf_name} ({name})"
                out[SPLIT_ALIASES[name]] = lambda split=split, where=where: _field_docs(split, cfg.text_field, where)
        if "train" not in out:
            raise ValueError(f"hf dataset {cfg.hf_name} has no train split (splits: {list(ds)})")
        if "valid" not in out:
            if "test" in out:
                out["valid"] = out.pop("test")
            else:
                out = split_streams(out["train"])
        return out

    return Source("hf", identity, opener, legacy_identity=legacy)


# ----------------------------------------------------------------------------- named corpora

def _locate(cfg, corpus: str, names: tuple, url: str, cached_name: str, verify) -> str:
    """data.path (file or dir), else the data dir, else a download into the data dir."""
    if cfg.path:
        path = os.path.expanduser(cfg.path)
        if os.path.isfile(path):
            return path
        if os.path.isdir(path):
            for n in names:
                for p in (os.path.join(path, n), os.path.join(path, corpus, n)):
                    if os.path.isfile(p):
                        return p
            raise FileNotFoundError(f"data.path={cfg.path!r}: no {corpus} file ({', '.join(names)}) in it")
        raise FileNotFoundError(f"data.path={cfg.path!r}: no such file or directory ({corpus})")
    root = os.path.join(data_dir(cfg), corpus)
    for n in names:
        if os.path.isfile(os.path.join(root, n)):
            return os.path.join(root, n)
    dest = os.path.join(root, cached_name)
    try:
        log.info("downloading %s to %s", url, dest)
        return download(url, dest, verify=verify)
    except OSError as e:
        raise FileNotFoundError(
            f"{corpus}: not found in {root} and the download from {url} failed ({e}). Put the file "
            f"there (data.data_dir or $LM_DATA_DIR), or point data.path at a local copy.") from None


def _shakespeare_bytes(path: str) -> bytes:
    data = read_bytes(path)
    if sha256_of(data) != TINYSHAKESPEARE_SHA256:
        raise ValueError(f"{path}: sha256 {sha256_of(data)} is not tiny Shakespeare's {TINYSHAKESPEARE_SHA256}")
    return data


def _enwik8_bytes(path: str) -> bytes:
    data = read_bytes(path)
    if len(data) == ENWIK8_SIZE and sha256_of(data) != ENWIK8_SHA256:
        raise ValueError(f"{path}: sha256 {sha256_of(data)} is not enwik8's {ENWIK8_SHA256}")
    return data


def load_tinyshakespeare(cfg, strict: bool) -> dict:
    path = _locate(cfg, "tinyshakespeare", ("input.txt", "tinyshakespeare.txt"), TINYSHAKESPEARE_URL,
                   "input.txt", _shakespeare_bytes)
    data = _shakespeare_bytes(path)
    text = decode(data, path, strict)
    cut = int(len(text) * 0.9)
    return {"train": [text[:cut]], "valid": [text[cut:]]}


ENWIK8_NAMES = ("enwik8", "enwik8.zip", "enwik8_first1M.gz", "enwik8.gz")


def load_enwik8(cfg, strict: bool, path: str = "") -> dict:
    path = path or _locate(cfg, "enwik8", ENWIK8_NAMES, ENWIK8_URL, "enwik8.zip", _enwik8_bytes)
    data = _enwik8_bytes(path)
    n = len(data)
    if n == ENWIK8_SIZE:
        a, b = 90_000_000, 95_000_000
    else:
        a, b = n * 90 // 100, n * 95 // 100
        log.warning("%s has %d bytes, not the full enwik8 (%d): split 90/5/5 proportionally "
                        "(%d/%d/%d bytes); results are not comparable with published enwik8 numbers",
                        path, n, ENWIK8_SIZE, a, b - a, n - b)
    # Byte-exact splits may cut a multi-byte character: such bytes are kept as surrogates.
    return {name: [data[i:j].decode("utf-8", "surrogateescape")]
            for name, i, j in (("train", 0, a), ("valid", a, b), ("test", b, n))}


# ----------------------------------------------------------------------------- stdlib corpus

_STDLIB_SKIP = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}


def stdlib_files() -> tuple:
    """(stdlib root, relative paths of the stdlib .py files in the corpus (see module docstring)."""
    root = sysconfig.get_paths()["stdlib"]
    found = []
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x not in _STDLIB_SKIP and not x.startswith("config-"))
        for f in files:
            if f.endswith(".py") and not f.startswith(("test_", "_sysconfigdata")):
                rel = os.path.relpath(os.path.join(d, f), root)
                found.append((hashlib.sha1(rel.encode()).hexdigest(), rel, os.path.getsize(os.path.join(d, f))))
    chosen, total = [], 0
    for _, rel, size in sorted(found):
        if total + size <= STDLIB_MAX_BYTES:
            chosen.append(rel)
            total += size
    return root, sorted(chosen)


def load_stdlib(cfg=None, strict: bool = True) -> dict:
    root, files = stdlib_files()
    out = {"train": [], "valid": []}
    for rel in files:
        with open(os.path.join(root, rel), "rb") as f:
            data = f.read()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue  # a few stdlib files are latin-1 on purpose; skip them everywhere
        if text:
            valid = int(hashlib.sha1(rel.encode()).hexdigest(), 16) % 20 == 0
            out["valid" if valid else "train"].append(text)
    if not out["train"] or not out["valid"]:
        raise ValueError(f"stdlib corpus: too few .py files under {root}")
    return out


def _named(cfg, strict: bool) -> Source:
    if cfg.source == "tinyshakespeare":  # identified by its checked sha256
        identity = {"kind": "tinyshakespeare", "sha256": TINYSHAKESPEARE_SHA256}
        return Source.from_docs("tinyshakespeare", identity, lambda: load_tinyshakespeare(cfg, strict))
    if cfg.source == "enwik8":
        path = _locate(cfg, "enwik8", ENWIK8_NAMES, ENWIK8_URL, "enwik8.zip", _enwik8_bytes)
        identity = {"kind": "enwik8", "file": file_identity([path], data_dir(cfg))}
        src = Source.from_docs("enwik8", identity, lambda: load_enwik8(cfg, strict, path))
        src.legacy_identity = {"kind": "enwik8", "file": mtime_identity([path])}
        return src
    root, files = stdlib_files()
    identity = {"kind": "stdlib", "root": root, "files": hashlib.sha256(json.dumps(
        [[rel, os.path.getsize(os.path.join(root, rel))] for rel in files]).encode()).hexdigest()}
    return Source.from_docs("stdlib", identity, lambda: load_stdlib(cfg, strict))


def load_tasks(cfg, strict: bool = True) -> dict:
    """Text of the synthetic tasks named in data.tasks (lm/evals/tasks.py): solved examples,
    about train_tokens / eval_tokens characters, from streams the evals never draw from."""
    from lm.evals import tasks  # numpy-only generators

    return {split: tasks.corpus(cfg.tasks, int(n), split=split)
            for split, n in (("train", cfg.train_tokens), ("valid", cfg.eval_tokens))}


def open_tasks(cfg) -> Source:
    from lm.evals import tasks

    identity = {"kind": "tasks", "tasks": tasks.parse_tasks(cfg.tasks), "version": tasks.CORPUS_VERSION,
                "chars": [int(cfg.train_tokens), int(cfg.eval_tokens)]}
    return Source.from_docs("tasks", identity, lambda: load_tasks(cfg))


def open_source(cfg, strict: bool) -> Source:
    """The text source named by cfg.source as streams; strict: invalid UTF-8 is an error."""
    if cfg.source == "tasks":
        return open_tasks(cfg)
    if cfg.source == "hf":
        return open_hf(cfg)
    if cfg.source == "files":
        return open_files(cfg, strict)
    return _named(cfg, strict)


def _materialise(src: Source) -> dict:
    return {split: ["".join(doc) for doc in src.docs(split)] for split in src.splits}


def load_text(cfg, strict: bool) -> dict:
    """{split: [documents]} for a text source, whole in memory (small corpora, tests)."""
    return _materialise(open_source(cfg, strict))
