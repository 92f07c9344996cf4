"""The on-disk token store: equal to the in-memory path, resumable builds, checksums, processes."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from lm.config import ConfigError
from lm.data import batches, build_dataset, data_config, prepare, sources, store

KEYS = ("inputs", "targets", "weights", "segment_ids")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def corpus(tmp_path, n=40, rows=True):
    """Text files (one document each, with non-ASCII text) and a jsonl of short documents
    (subprocess tests skip the jsonl: importing `datasets` costs seconds per process)."""
    d = tmp_path / "corpus"
    d.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        lines = [f"file {i} line {j}: " + "lorem ipsum é ☃ " * int(rng.integers(0, 6)) for j in range(60)]
        (d / f"part{i}.txt").write_text("\n".join(lines) + "\n")
    if rows:
        lines = [json.dumps({"text": f"row {i}: " + "ab cd ü " * int(rng.integers(1, 9)), "n": i}) for i in range(n)]
        (d / "rows.jsonl").write_text("\n".join(lines) + "\n")
    return d


def cfg_for(tmp_path, **kw):
    kw.setdefault("source", "files")
    kw.setdefault("path", str(tmp_path / "corpus"))
    return data_config(data_dir=str(tmp_path / "cache"), **kw)


def equal(a, b):
    return all(np.array_equal(a[k], b[k]) for k in KEYS)


def in_memory(cfg, tok, seq_len):
    """The reference: whole documents in memory, encoded one by one, packed in memory."""
    out = {}
    for split, docs in sources.load_text(cfg, strict=cfg.tokenizer != "byte").items():
        pieces = [tok.encode_corpus(d) for d in docs]
        ids = np.repeat(np.arange(len(pieces)), [len(p) for p in pieces])
        out[split] = batches.PackedSplit(np.concatenate(pieces), ids, seq_len, True)
    return out


@pytest.mark.parametrize("kind", ["byte", "char", "sentencepiece"])
def test_store_equals_in_memory_path(tmp_path, monkeypatch, kind):
    corpus(tmp_path)
    monkeypatch.setattr(sources, "CHUNK_BYTES", 256)  # many pieces per file
    cfg = cfg_for(tmp_path, tokenizer=kind, vocab_size=300, shard_tokens=500, document_masking=True)
    ds = build_dataset(cfg, 16)
    ref = in_memory(cfg, ds.tokenizer, 16)
    assert ds.splits == tuple(ref) == ("train", "valid")
    for split in ds.splits:
        got = ds._packed[split]
        assert isinstance(got, store.StoredSplit)
        np.testing.assert_array_equal(got.tokens, ref[split].tokens)
        np.testing.assert_array_equal(got.doc_ids, ref[split].doc_ids)
        assert len(got._tok) > 1 or split == "valid"  # rows cross shard boundaries
        assert got._tok[0].dtype == np.uint16
    it = ds.train_iterator(8, seed=2)
    R = ref["train"].rows_per_epoch
    for step in range(2 * R // 8 + 3):  # across epochs
        rows = np.arange(step * 8, step * 8 + 8)
        assert equal(next(it), ref["train"].train_rows(rows, 2))
    for k, b in enumerate(ds.eval_batches("valid", 4)):
        assert equal(b, ref["valid"].eval_rows(np.arange(k * 4, k * 4 + 4)[:len(b["inputs"])])) or k
    assert ds.text("valid") == "".join(sources.load_text(cfg, True)["valid"])


def test_reused_when_identical_rebuilt_when_data_changes(tmp_path, monkeypatch):
    corpus(tmp_path)
    cfg = cfg_for(tmp_path, tokenizer="char")
    first = build_dataset(cfg, 16)
    monkeypatch.setattr(store, "build", lambda *a, **k: pytest.fail("store not reused"))
    np.testing.assert_array_equal(build_dataset(cfg, 16).tokens("valid"), first.tokens("valid"))
    monkeypatch.undo()
    (tmp_path / "corpus" / "part0.txt").write_text("changed text\n" * 50)
    again = build_dataset(cfg, 16)
    assert not np.array_equal(again.tokens("train"), first.tokens("train"))
    assert "changed text" in again.text("train")
    assert len([d for d in os.listdir(tmp_path / "cache" / "store") if not d.startswith(".")]) == 2


BUILD = """
import functools, os, signal, sys, numpy as np
from lm.data import build_dataset, data_config, store
crash = int(os.environ.get("CRASH_AT", "0"))  # this script's own switch: SIGKILL after n shards
if crash:
    kill = lambda n: n >= crash and os.kill(os.getpid(), signal.SIGKILL)
    store.build = functools.partial(store.build, on_shard=kill)
cfg = data_config(data_dir=sys.argv[1], source="files", path=sys.argv[2], tokenizer=sys.argv[3],
                  vocab_size=300, shard_tokens=int(sys.argv[4]), document_masking=True)
work = sys.argv[5] if len(sys.argv) > 5 else None
ds = build_dataset(cfg, 16, workdir=work)
print(ds.vocab_size, int(np.asarray(ds.tokens("train"), np.int64).sum()), len(ds.tokens("valid")))
"""


def run_build(tmp_path, data_dir, kind="byte", shard=300, workdir=None, env=None, wait=True):
    args = [sys.executable, "-c", BUILD, str(data_dir), str(tmp_path / "corpus"), kind, str(shard)]
    proc = subprocess.Popen(args + ([str(workdir)] if workdir else []), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}, cwd=REPO)
    return proc.communicate() + (proc.returncode,) if wait else proc


def test_kill9_during_build_then_rerun_equals_uninterrupted(tmp_path):
    corpus(tmp_path, rows=False)
    _, err, rc = run_build(tmp_path, tmp_path / "a", env={"CRASH_AT": "3"})
    assert rc == -signal.SIGKILL, err
    [root] = [p for p in (tmp_path / "a" / "store").iterdir() if not p.name.startswith(".")]
    [folder] = [p for p in root.iterdir() if p.name.startswith("tokens-")]
    assert not (folder / store.MANIFEST).exists()
    kept = {f: os.stat(folder / "train" / f).st_mtime_ns for f in ("shard-00000.bin", "shard-00002.bin")}
    out, err, rc = run_build(tmp_path, tmp_path / "a")  # resumes
    assert rc == 0, err
    assert kept == {f: os.stat(folder / "train" / f).st_mtime_ns for f in kept}  # finished shards kept
    straight, err, rc = run_build(tmp_path, tmp_path / "b")
    assert rc == 0 and out == straight
    resumed = json.loads((folder / store.MANIFEST).read_text())["splits"]
    [other] = [p for p in (tmp_path / "b" / "store").iterdir() if not p.name.startswith(".")]
    fresh = json.loads(next(other.glob("tokens-*/manifest.json")).read_text())["splits"]
    assert resumed["train"]["tokens"] > 3 * 300
    for split in fresh:
        assert [r["sha256"] for r in resumed[split]["shards"]] == [r["sha256"] for r in fresh[split]["shards"]]
        assert [r["doc_sha256"] for r in resumed[split]["shards"]] == [r["doc_sha256"] for r in fresh[split]["shards"]]
    assert not list(folder.glob("*/*.partial"))


def test_eight_processes_open_one_workdir_at_once(tmp_path):
    corpus(tmp_path, rows=False)
    procs = [run_build(tmp_path, tmp_path / "cache", "sentencepiece", 10_000, tmp_path / "work", wait=False)
             for _ in range(8)]
    results = [p.communicate() + (p.returncode,) for p in procs]
    assert [rc for _, _, rc in results] == [0] * 8, [e[-300:] for _, e, _ in results]
    assert len({out for out, _, _ in results}) == 1
    assert sorted(os.listdir(tmp_path / "work")) == [".tokenizer.lock", "tokenizer"]


TWO = """
import sys, numpy as np
from lm.data import build_dataset, data_config
cfg = data_config(data_dir=sys.argv[1], source="files", path=sys.argv[2], tokenizer="byte", shard_tokens=700)
it = build_dataset(cfg, 16).train_iterator(8, seed=5, process_index=int(sys.argv[3]), process_count=2)
np.savez(sys.argv[4], **{f"{k}{i}": v for i in range(6) for k, v in next(it).items()})
"""


def test_two_processes_read_disjoint_rows_of_the_global_batch(tmp_path):
    corpus(tmp_path, rows=False)
    cfg = cfg_for(tmp_path, tokenizer="byte", shard_tokens=700)
    ds = build_dataset(cfg, 16)
    procs = [subprocess.Popen([sys.executable, "-c", TWO, str(tmp_path / "cache"), str(tmp_path / "corpus"),
                               str(p), str(tmp_path / f"p{p}.npz")], cwd=REPO, stderr=subprocess.PIPE, text=True)
             for p in range(2)]
    assert [p.wait() for p in procs] == [0, 0], [p.stderr.read() for p in procs]
    parts = [np.load(tmp_path / f"p{p}.npz") for p in range(2)]
    it = ds.train_iterator(8, seed=5)
    for i in range(6):
        whole = next(it)
        a, b = ({k: part[f"{k}{i}"] for k in KEYS} for part in parts)
        assert a["inputs"].shape == (4, 16)
        assert equal(whole, {k: np.concatenate([a[k], b[k]]) for k in KEYS})
        assert not np.array_equal(a["inputs"], b["inputs"])


def test_truncated_or_altered_shard_is_a_one_line_error(tmp_path, monkeypatch):
    corpus(tmp_path)
    cfg = cfg_for(tmp_path, tokenizer="byte", shard_tokens=1000)
    build_dataset(cfg, 16)
    [shard] = (tmp_path / "cache" / "store").glob("*/tokens-*/train/shard-00001.bin")
    good = shard.read_bytes()
    shard.write_bytes(good[:-2])
    with pytest.raises(store.StoreError, match=f"{shard} has {len(good) - 2} bytes.*truncated") as e:
        build_dataset(cfg, 16)
    assert "\n" not in str(e.value)
    altered = bytearray(good)
    altered[10] ^= 1
    shard.write_bytes(bytes(altered))
    with pytest.raises(store.StoreError, match=f"{shard} fails its sha256 check"):
        build_dataset(cfg, 16)
    # A large store hashes only files whose mtime changed, unless asked to verify everything.
    monkeypatch.setattr(store, "VERIFY_BYTES", 0)
    manifest = json.loads(next(shard.parent.parent.glob("manifest.json")).read_text())
    rec = manifest["splits"]["train"]["shards"][1]
    os.utime(shard, ns=(rec["file_mtime_ns"], rec["file_mtime_ns"]))
    build_dataset(cfg, 16)  # same size and mtime: not rehashed
    cfg.store_verify = True
    with pytest.raises(store.StoreError, match="sha256"):
        build_dataset(cfg, 16)
    shard.write_bytes(good)
    build_dataset(cfg, 16)


def test_hf_streaming_offline_from_local_files(tmp_path, monkeypatch):
    d = tmp_path / "hub"
    d.mkdir()
    for split, n in (("train", 60), ("validation", 10)):
        (d / f"{split}.jsonl").write_text("".join(json.dumps({"content": f"{split} {i} ✓ " * 3}) + "\n"
                                                  for i in range(n)))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets

    calls, load = [], datasets.load_dataset
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append(k) or load(*a, **k))
    hf = build_dataset(cfg_for(tmp_path, source="hf", hf_name=str(d), text_field="content", tokenizer="char"), 16)
    assert calls and all(k.get("streaming") for k in calls)
    files = build_dataset(cfg_for(tmp_path, path=f"train={d}/train.jsonl,valid={d}/validation.jsonl",
                                  text_field="content", tokenizer="char"), 16)
    for split in ("train", "valid"):
        np.testing.assert_array_equal(hf.tokens(split), files.tokens(split))
    assert hf.text("valid").startswith("validation 0 ✓")


def leftovers(tmp_path):
    root = tmp_path / "cache" / "store"
    return [p.name for p in root.iterdir() if not p.name.startswith(".")] if root.exists() else []


def test_bad_input_is_one_clear_line_and_leaves_nothing(tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    (d / "empty.jsonl").write_text(json.dumps({"text": ""}) + "\n")
    cases = [
        (dict(path=str(d / "empty.jsonl")), ValueError, "no non-empty 'text' values"),
        (dict(path=str(d / "*.txt")), FileNotFoundError, "no files match the glob"),
        (dict(path=str(d / "empty.jsonl"), text_field="body"), ValueError, "no column data.text_field='body'"),
        (dict(path=str(d / "empty.jsonl"), tokenizer="sentencepiece", vocab_size=70_000, store_dtype="uint16"),
         ConfigError, "store_dtype=uint16 holds at most 65536"),
    ]
    (d / "rows.jsonl").write_text("".join(json.dumps({"body": "x" * 50}) + "\n" for _ in range(5)))
    cases.append((dict(path=str(d / "rows.jsonl")), ValueError, "no column data.text_field='text'"))
    for kw, error, message in cases:
        with pytest.raises(error, match=message) as e:
            build_dataset(cfg_for(tmp_path, **kw), 8)
        assert "\n" not in str(e.value) and leftovers(tmp_path) == [], kw
    (d / "rows.jsonl").write_text("".join(json.dumps({"text": "ab"}) + "\n" for _ in range(9)))
    with pytest.raises(ValueError, match="split 'files/valid' has 2 tokens"):  # too short for a row
        build_dataset(cfg_for(tmp_path, path=str(d / "rows.jsonl")), 8)
    with pytest.raises(ConfigError, match="store_dtype='int8'"):
        build_dataset(cfg_for(tmp_path, path=str(d / "rows.jsonl"), store_dtype="int8"), 8)
    with pytest.raises(ConfigError, match="data.shard_tokens=0 must be positive"):
        build_dataset(cfg_for(tmp_path, path=str(d / "rows.jsonl"), shard_tokens=0), 8)


def test_sentencepiece_sample_is_drawn_across_the_corpus():
    docs = [[f"doc {i} " + "abc " * 100 + "\n"] for i in range(4000)]  # 1.6M characters
    text = prepare.sample_text(iter(docs), 400_000)
    assert 300_000 < len(text) <= 400_000 + prepare.SAMPLE_BLOCK
    seen = [int(line.split()[1]) for line in text.splitlines() if line.startswith("doc ")]
    assert seen == sorted(seen) and max(seen) - min(seen) > 2000  # spread across it (a head: 0..975)
    small = [["line one\n", "line two"], ["\nthree"]]
    assert prepare.sample_text(iter(small), 1000) == "line one\nline two\nthree"  # all of a small text


def test_large_epochs_use_a_computed_permutation(monkeypatch):
    monkeypatch.setattr(batches, "BIG_EPOCH", 10)
    split = batches.PackedSplit(np.arange(5000, dtype=np.int32), np.zeros(5000, np.int32), 10, False)
    R = split.rows_per_epoch
    for epoch in range(2):
        b = split.train_rows(np.arange(epoch * R, (epoch + 1) * R), seed=1)
        starts = np.sort(b["inputs"][:, 0])
        np.testing.assert_array_equal(np.diff(starts), 10)  # every row of the epoch exactly once
    first = split.train_rows(np.arange(R), seed=1)["inputs"][:, 0]
    assert not np.array_equal(first, np.sort(first))  # shuffled
    np.testing.assert_array_equal(split.train_rows(np.arange(5, 9), seed=1)["inputs"][:, 0], first[5:9])


def test_multi_host_process_zero_builds_before_the_barrier(tmp_path, monkeypatch):
    corpus(tmp_path, rows=False)
    events, build = [], store.build
    monkeypatch.setattr(prepare, "_barrier", lambda name: events.append("barrier"))
    monkeypatch.setattr(store, "build", lambda *a, **k: events.append("build") or build(*a, **k))
    for index in (1, 0):  # a host-local data dir: process 1 builds its own copy after the barrier
        monkeypatch.setattr(prepare, "_processes", lambda: (index, 2))
        build_dataset(cfg_for(tmp_path, tokenizer="byte", store_dir=str(tmp_path / f"host{index}")), 16)
    assert events == ["barrier", "build", "build", "barrier"]
    events.clear()
    build_dataset(cfg_for(tmp_path, tokenizer="byte", store_dir=str(tmp_path / "host0")), 16)
    assert events == ["barrier"]  # process 0 of a shared store: opened, not rebuilt


def test_corrupt_workdir_tokenizer_replaced_or_refused(tmp_path):
    corpus(tmp_path, rows=False)
    cfg = cfg_for(tmp_path, tokenizer="sentencepiece", vocab_size=300)
    work = tmp_path / "work"
    first = build_dataset(cfg, 16, workdir=str(work))
    (work / "tokenizer" / "spm.model").write_bytes(b"garbage")  # no checkpoint uses it: rebuilt
    np.testing.assert_array_equal(build_dataset(cfg, 16, workdir=str(work)).tokens("valid"), first.tokens("valid"))
    (work / "tokenizer" / "spm.model").write_bytes(b"garbage")
    os.makedirs(work / "checkpoints" / "3")
    with pytest.raises(ValueError, match="spm.model is not a readable sentencepiece model.*checkpoints") as e:
        build_dataset(cfg, 16, workdir=str(work))
    assert "\n" not in str(e.value)


def test_resume_refuses_another_vocab_size(tmp_path):
    from lm.config import base_config
    from lm.runs import _check_workdir

    config = base_config()
    config.data.vocab_size = 1000
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    config.data.store_dir = str(tmp_path / "elsewhere")  # where the store lives may change
    _check_workdir(str(tmp_path), config)
    config.data.vocab_size = 400
    with pytest.raises(ConfigError, match="data.vocab_size=1000, not 400"):
        _check_workdir(str(tmp_path), config)


def test_every_file_format_streamed(tmp_path):
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq

    d = tmp_path / "mixed"
    d.mkdir()
    pq.write_table(pa.table({"text": [f"parquet row {i}" for i in range(30)]}), d / "a.parquet")
    (d / "b.csv").write_text("text,n\n" + "".join(f"csv row {i},{i}\n" for i in range(30)))
    (d / "c.md").write_text("# markdown\n" * 40)
    with gzip.open(d / "d.txt.gz", "wt") as f:
        f.write("gzipped line ✓\n" * 40)
    ds = build_dataset(cfg_for(tmp_path, path=str(d), tokenizer="char"), 8)
    text = ds.text("train") + ds.text("valid")
    assert text == ("".join(f"csv row {i}" for i in range(30)) + "".join(f"parquet row {i}" for i in range(30))
                    + "# markdown\n" * 40 + "gzipped line ✓\n" * 40)
    assert ds.tokenizer.decode(np.concatenate([ds.tokens("train"), ds.tokens("valid")])) == text
    (d / "d.txt.gz").write_bytes((d / "d.txt.gz").read_bytes()[:-12])  # truncated archive
    with pytest.raises(ValueError, match=f"{d / 'd.txt.gz'}: cannot read past byte .*truncated") as e:
        build_dataset(cfg_for(tmp_path, path=str(d), tokenizer="char"), 8)
    assert "\n" not in str(e.value)


def test_weighted_mixture_of_file_sources(tmp_path, monkeypatch):
    for name, letter in (("a", "x"), ("b", "y")):
        (tmp_path / name).mkdir()
        for i in range(3):
            (tmp_path / name / f"{i}.txt").write_text(f"{letter * 20}\n" * (30 + 10 * i))
    spec = f"{tmp_path / 'a'}@3;{tmp_path / 'b'}@1"
    cfg = cfg_for(tmp_path, path="", mixture=spec, tokenizer="char")
    ds = build_dataset(cfg, 8)
    assert ds.vocab_size == 3  # one tokenizer: x, y, newline
    x = ds.tokenizer.encode("x")[0]
    it = ds.train_iterator(40, seed=0)
    batches = [next(it) for _ in range(50)]  # 2 periods of 1000 rows
    rows = np.concatenate([b["inputs"] for b in batches])
    from_a = (rows == x).any(axis=1)
    assert from_a.sum() == 1500  # exactly 3:1
    assert 0.6 < from_a[:40].mean() < 0.9  # interleaved, not in blocks
    resumed = ds.train_iterator(40, seed=0)
    resumed.restore(json.loads(json.dumps({**it.state(), "step": 17})))
    assert equal(next(resumed), batches[17])
    ev = np.concatenate([b["targets"][b["weights"] > 0] for b in ds.eval_batches("valid", 4)])
    assert len(ev) == sum(len(p.tokens) - 1 for p in ds._packed["valid"].parts)
    monkeypatch.setattr(store, "build", lambda *a, **k: pytest.fail("stores not reused"))
    cfg.mixture = f"{tmp_path / 'a'}@1;{tmp_path / 'b'}@1"  # new weights, same stores
    assert (np.concatenate([b["inputs"] for b in [next(build_dataset(cfg, 8).train_iterator(1000, seed=0))]])
            == x).any(axis=1).sum() == 500
    for bad, message in ((f"{tmp_path}@1", "at least two"), (f"{tmp_path}@x;{tmp_path}@1", "PATH@WEIGHT")):
        with pytest.raises(ConfigError, match=message):
            build_dataset(cfg_for(tmp_path, path="", mixture=bad), 8)
