"""Sources: named corpora, the stdlib corpus, local files, the hub offline, bad input, the cache."""

import gzip
import hashlib
import json
import os
import time
import urllib.request

import numpy as np
import pytest

from lm.data import build_dataset, data_config, sources

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
SHAKESPEARE = os.path.join(SHARED, "tinyshakespeare", "input.txt")
ENWIK8_1M = os.path.join(SHARED, "enwik8", "enwik8_first1M.gz")


def data_cfg(tmp_path, **kw):
    return data_config(data_dir=str(tmp_path / "cache"), **kw)


def need(path):
    if not os.path.exists(path):
        pytest.skip(f"{path} not present")


def no_temp_files(root):
    return [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.startswith((".tmp-", ".download-"))]


def test_tinyshakespeare_split_and_vocab(tmp_path):
    need(SHAKESPEARE)
    ds = build_dataset(data_cfg(tmp_path, source="tinyshakespeare", path=SHAKESPEARE, tokenizer="char"), 64)
    assert ds.vocab_size == 65 and ds.splits == ("train", "valid")
    assert len(ds.tokens("train")) == 1_003_854 and len(ds.tokens("valid")) == 111_540
    assert ds.text("train").startswith("First Citizen:\nBefore we proceed")
    assert ds.tokenizer.encode("\n ")[0] == 0 and ds.tokenizer.encode("z")[0] == 64  # nanoGPT ids


def test_tinyshakespeare_from_data_dir_offline(tmp_path, monkeypatch):
    need(SHAKESPEARE)
    monkeypatch.setenv("LM_OFFLINE", "1")
    cfg = data_cfg(tmp_path, source="tinyshakespeare")
    with pytest.raises(FileNotFoundError, match="tinyshakespeare: not found in .*data.path"):
        build_dataset(cfg, 64)
    assert no_temp_files(tmp_path) == []
    os.makedirs(tmp_path / "cache" / "tinyshakespeare")
    with open(SHAKESPEARE, "rb") as f:
        (tmp_path / "cache" / "tinyshakespeare" / "input.txt").write_bytes(f.read())
    assert len(build_dataset(cfg, 64).tokens("valid")) == 111_540
    monkeypatch.setenv("LM_DATA_DIR", str(tmp_path / "cache"))
    cfg.data_dir = ""
    assert len(build_dataset(cfg, 64).tokens("valid")) == 111_540


def test_tinyshakespeare_sha256_checked(tmp_path):
    bad = tmp_path / "input.txt"
    bad.write_text("First Citizen:\nnot quite the same file\n" * 100)
    with pytest.raises(ValueError, match=f"{bad}: sha256 .* is not tiny Shakespeare"):
        build_dataset(data_cfg(tmp_path, source="tinyshakespeare", path=str(bad)), 16)


def test_enwik8_small_file_split_proportionally(tmp_path, caplog):
    need(ENWIK8_1M)
    ds = build_dataset(data_cfg(tmp_path, source="enwik8", path=ENWIK8_1M, tokenizer="byte"), 128)
    assert ds.splits == ("train", "valid", "test")
    with gzip.open(ENWIK8_1M, "rb") as f:
        raw = f.read()
    assert hashlib.sha256(raw).hexdigest().startswith("369b6889")
    np.testing.assert_array_equal(ds.tokens("valid"), np.frombuffer(raw[900_000:950_000], np.uint8))
    assert len(ds.tokens("test")) == 50_000
    assert ds.text("test").encode("utf-8", "surrogateescape") == raw[950_000:]
    assert "split 90/5/5 proportionally" in caplog.text


def test_enwik8_full_size_file_sha256_checked(tmp_path):
    fake = tmp_path / "enwik8"
    with open(fake, "wb") as f:
        f.truncate(sources.ENWIK8_SIZE)  # right size, wrong content
    with pytest.raises(ValueError, match="sha256 .* is not enwik8's 2b49720e"):
        build_dataset(data_cfg(tmp_path, source="enwik8", path=str(tmp_path)), 16)


def test_stdlib_corpus_fast_and_deterministic(tmp_path):
    t = time.time()
    ds = build_dataset(data_cfg(tmp_path, source="stdlib", tokenizer="byte"), 128)
    assert time.time() - t < 30  # generous: a few seconds in practice; a bound, not a benchmark
    root, files = sources.stdlib_files()
    assert files == sorted(files) and len(files) > 100
    assert not any(part in ("test", "tests", "site-packages") for f in files for part in f.split(os.sep))
    total = sum(len(ds.tokens(s)) for s in ds.splits)
    assert 1_000_000 < total <= sources.STDLIB_MAX_BYTES
    assert 0.01 < len(ds.tokens("valid")) / total < 0.15
    again = build_dataset(data_cfg(tmp_path, source="stdlib", tokenizer="byte"), 128)
    np.testing.assert_array_equal(ds.tokens("valid"), again.tokens("valid"))


def test_files_text_glob_jsonl_and_split_files(tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    for i in range(5):
        (d / f"part{i}.txt").write_text(f"document {i} ünïcode\n" * 20)
    ds = build_dataset(data_cfg(tmp_path, source="files", path=str(d / "*.txt"), tokenizer="char"), 8)
    text = "".join(f"document {i} ünïcode\n" * 20 for i in range(5))
    assert ds.text("train") + ds.text("valid") == text
    assert len(ds.text("valid")) == len(text) - int(len(text) * 0.9)
    rows = [{"text": f"row {i} ✓", "other": i} for i in range(50)]
    (d / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    ds = build_dataset(data_cfg(tmp_path, source="files", path=str(d / "rows.jsonl")), 4)
    assert ds.text("valid").endswith("row 49 ✓")
    with pytest.raises(ValueError, match="data.text_field='body'"):
        build_dataset(data_cfg(tmp_path, source="files", path=str(d / "rows.jsonl"), text_field="body"), 4)
    spec = f"train={d}/part[0-3].txt,valid={d}/part4.txt"
    ds = build_dataset(data_cfg(tmp_path, source="files", path=spec), 8)
    assert ds.text("valid") == "document 4 ünïcode\n" * 20
    s = tmp_path / "splits"
    s.mkdir()
    (s / "train.txt").write_text("train text " * 20)
    (s / "valid.txt").write_text("valid text " * 20)
    ds = build_dataset(data_cfg(tmp_path, source="files", path=str(s)), 8)
    assert ds.text("valid") == "valid text " * 20


def test_bad_input_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.txt"
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        build_dataset(data_cfg(tmp_path, source="files", path=str(missing)), 8)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match=f"data file is empty: {empty}"):
        build_dataset(data_cfg(tmp_path, source="files", path=str(empty)), 8)
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("café crème brûlée\n".encode("latin-1") * 20)
    with pytest.raises(ValueError, match=f"{latin} is not valid UTF-8 \\(byte 3"):
        build_dataset(data_cfg(tmp_path, source="files", path=str(latin), tokenizer="char"), 8)
    ds = build_dataset(data_cfg(tmp_path, source="files", path=str(latin), tokenizer="byte"), 8)
    assert len(ds.tokens("train")) + len(ds.tokens("valid")) == len(latin.read_bytes())  # bytes are exact
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    (nothing / "image.png").write_bytes(b"\x89PNG")
    with pytest.raises(FileNotFoundError, match="nothing'?: directory has no data files"):
        build_dataset(data_cfg(tmp_path, source="files", path=str(nothing)), 8)
    with pytest.raises(FileNotFoundError, match="no files match the glob"):
        build_dataset(data_cfg(tmp_path, source="files", path=str(nothing / "*.txt")), 8)
    with pytest.raises(ValueError, match="data.source=files needs data.path"):
        build_dataset(data_cfg(tmp_path, source="files"), 8)


def test_hf_offline_is_a_fast_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    t = time.time()
    with pytest.raises(ConnectionError, match="data.source=files data.path="):
        build_dataset(data_cfg(tmp_path, source="hf", hf_name="karpathy/tiny_shakespeare"), 8)
    assert time.time() - t < 10


def test_hf_online_splits_mapped(tmp_path, monkeypatch):
    """The hub path with the network faked: validation -> valid, text_field picked."""
    import datasets

    fake = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"content": [f"train doc {i} ✓" for i in range(40)]}),
        "validation": datasets.Dataset.from_dict({"content": [f"valid doc {i}" for i in range(10)]})})
    calls = []
    monkeypatch.setattr(sources, "_hub_reachable", lambda *a, **k: True)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append(a) or fake)
    for var in sources._OFFLINE_VARS:
        monkeypatch.delenv(var, raising=False)
    cfg = data_cfg(tmp_path, source="hf", hf_name="someone/corpus", hf_config="v1", text_field="content",
                   tokenizer="char")
    ds = build_dataset(cfg, 16)
    assert calls == [("someone/corpus", "v1")]
    assert ds.text("valid") == "".join(f"valid doc {i}" for i in range(10))
    assert ds.text("train").startswith("train doc 0 ✓")
    cfg.text_field = "text"
    with pytest.raises(ValueError, match="data.text_field='text'.*content"):
        build_dataset(cfg, 16)


def test_download_is_atomic(tmp_path, monkeypatch):
    src = tmp_path / "remote.txt"
    src.write_bytes(b"x" * 3_000_000)
    dest = tmp_path / "cache" / "file.txt"
    sources.download(src.as_uri(), str(dest))
    assert dest.read_bytes() == src.read_bytes()

    class Broken:  # a connection that dies after the first chunk
        def __init__(self, *a, **k):
            self.n = 0

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def read(self, size):
            self.n += 1
            if self.n > 1:
                raise ConnectionResetError("connection reset")
            return b"y" * size

    monkeypatch.setattr(urllib.request, "urlopen", Broken)
    dest2 = tmp_path / "cache" / "other.txt"
    with pytest.raises(ConnectionResetError):
        sources.download("http://example.invalid/x", str(dest2))
    assert not dest2.exists() and no_temp_files(tmp_path) == []
    assert sorted(os.listdir(tmp_path / "cache")) == ["file.txt"]


def test_named_corpus_download_verified_before_caching(tmp_path, monkeypatch):
    need(SHAKESPEARE)
    bad = tmp_path / "tampered.txt"
    bad.write_text("not shakespeare\n" * 1000)
    monkeypatch.setattr(sources, "TINYSHAKESPEARE_URL", bad.as_uri())
    cfg = data_cfg(tmp_path, source="tinyshakespeare")
    with pytest.raises(ValueError, match="is not tiny Shakespeare"):
        build_dataset(cfg, 64)
    assert os.listdir(tmp_path / "cache" / "tinyshakespeare") == []  # nothing half-checked cached
    monkeypatch.setattr(sources, "TINYSHAKESPEARE_URL", "file://" + os.path.abspath(SHAKESPEARE))
    assert len(build_dataset(cfg, 64).tokens("valid")) == 111_540
    assert os.listdir(tmp_path / "cache" / "tinyshakespeare") == ["input.txt"]


def test_enwik8_zip_archive(tmp_path):
    need(ENWIK8_1M)
    import zipfile
    with gzip.open(ENWIK8_1M, "rb") as f:
        raw = f.read()[:200_000]
    with zipfile.ZipFile(tmp_path / "enwik8.zip", "w") as z:
        z.writestr("enwik8", raw)
    ds = build_dataset(data_cfg(tmp_path, source="enwik8", path=str(tmp_path)), 64)
    assert [len(ds.tokens(s)) for s in ds.splits] == [180_000, 10_000, 10_000]


def test_token_cache_written_atomically_and_reused(tmp_path, monkeypatch):
    need(SHAKESPEARE)
    with open(SHAKESPEARE) as f:
        (tmp_path / "a.txt").write_text(f.read()[:100_000])
    cfg = data_cfg(tmp_path, source="files", path=str(tmp_path / "a.txt"), tokenizer="sentencepiece",
                   vocab_size=400)
    work = str(tmp_path / "work")
    ds = build_dataset(cfg, 32, workdir=work)
    stores = [d for d in os.listdir(tmp_path / "cache" / "store") if not d.startswith(".")]
    assert len(stores) == 1 and stores[0].startswith("files-")
    tokens = [d for d in os.listdir(tmp_path / "cache" / "store" / stores[0]) if d.startswith("tokens-")]
    assert len(tokens) == 1 and tokens[0].endswith("-uint16")
    assert no_temp_files(tmp_path) == []
    from lm.data import tokenizers
    monkeypatch.setattr(tokenizers.SentencePieceTokenizer, "encode_corpus",
                        lambda *a: pytest.fail("token cache not used"))
    again = build_dataset(cfg, 32, workdir=work)
    np.testing.assert_array_equal(again.tokens("train"), ds.tokens("train"))
