"""Packing, shuffling, resume, process slicing and eval coverage."""

import json

import numpy as np
import pytest

from lm.config import ConfigError
from lm.data import build_dataset, data_config
from lm.data.batches import PackedSplit

KEYS = ("inputs", "targets", "weights", "segment_ids")


def data_cfg(tmp_path, **kw):
    return data_config(data_dir=str(tmp_path / "cache"), **kw)


def docs_dataset(tmp_path, masking=False, seq_len=16):
    """A small files corpus of 30 documents of varying length (jsonl, one document per line)."""
    rng = np.random.default_rng(0)
    lines = [json.dumps({"text": f"doc{i}: " + "ab cd é " * int(rng.integers(1, 12))}) for i in range(30)]
    (tmp_path / "docs.jsonl").write_text("\n".join(lines) + "\n")
    cfg = data_cfg(tmp_path, source="files", path=str(tmp_path / "docs.jsonl"), tokenizer="byte",
                   document_masking=masking)
    return build_dataset(cfg, seq_len)


def equal(a, b):
    return all(np.array_equal(a[k], b[k]) for k in KEYS)


def test_batch_format_and_shift(tmp_path):
    ds = docs_dataset(tmp_path)
    b = next(ds.train_iterator(4, seed=0))
    assert {k: (v.shape, v.dtype.name) for k, v in b.items()} == {
        "inputs": ((4, 16), "int32"), "targets": ((4, 16), "int32"),
        "weights": ((4, 16), "float32"), "segment_ids": ((4, 16), "int32")}
    np.testing.assert_array_equal(b["inputs"][:, 1:], b["targets"][:, :-1])
    assert (b["segment_ids"] == 1).all()


def test_resume_equals_uninterrupted(tmp_path):
    ds = docs_dataset(tmp_path)
    rows = ds._packed["train"].rows_per_epoch
    it = ds.train_iterator(6, seed=3)
    straight = [next(it) for _ in range(3 * rows // 6 + 5)]  # crosses several epochs
    it = ds.train_iterator(6, seed=3)
    for _ in range(7):
        next(it)
    state = json.loads(json.dumps(it.state()))  # JSON-able
    resumed = ds.train_iterator(6, seed=3)
    resumed.restore(state)
    assert all(equal(a, b) for a, b in zip(straight[7:], resumed))
    other = ds.train_iterator(6, seed=4)
    assert not equal(straight[0], next(other))
    with pytest.raises(ValueError, match="seed"):
        other.restore(state)


def test_epoch_visits_every_row_once():
    tokens = np.arange(1000, dtype=np.int32)
    split = PackedSplit(tokens, np.zeros(1000, np.int32), 10, False)
    R = split.rows_per_epoch
    for epoch in range(2):
        b = split.train_rows(np.arange(epoch * R, (epoch + 1) * R), seed=0)
        starts = np.sort(b["inputs"][:, 0])
        assert len(set(starts % 10)) == 1  # one offset per epoch
        np.testing.assert_array_equal(np.diff(starts), 10)  # consecutive, non-overlapping windows
    np.testing.assert_array_equal(b["targets"], b["inputs"] + 1)


def test_two_processes_see_the_global_batch(tmp_path):
    ds = docs_dataset(tmp_path)
    whole = ds.train_iterator(8, seed=1)
    parts = [ds.train_iterator(8, seed=1, process_index=p, process_count=2) for p in range(2)]
    for _ in range(5):
        g, a, b = next(whole), next(parts[0]), next(parts[1])
        assert a["inputs"].shape == (4, 16)
        assert equal(g, {k: np.concatenate([a[k], b[k]]) for k in KEYS})
    ev = list(ds.eval_batches("valid", 4))
    ev_parts = [list(ds.eval_batches("valid", 4, process_index=p, process_count=2)) for p in range(2)]
    assert len(ev) == len(ev_parts[0]) == len(ev_parts[1])
    for g, a, b in zip(ev, *ev_parts):
        assert equal(g, {k: np.concatenate([a[k], b[k]]) for k in KEYS})
    with pytest.raises(ValueError, match="batch_size=7"):
        ds.train_iterator(7, seed=0, process_count=2)


def test_eval_covers_split_exactly(tmp_path):
    ds = docs_dataset(tmp_path)
    tokens = ds.tokens("train")
    batches = list(ds.eval_batches("train", 3))
    targets = np.concatenate([b["targets"][b["weights"] > 0] for b in batches])
    np.testing.assert_array_equal(targets, tokens[1:])
    last = batches[-1]
    assert (last["segment_ids"][last["weights"] == 0][1:] == 0).all()  # padding is segment 0
    assert len(list(ds.eval_batches("train", 3, max_batches=2))) == 2


def test_document_masking_segments(tmp_path):
    ds = docs_dataset(tmp_path, masking=True)
    doc_ids = ds._packed["train"].doc_ids
    tokens = ds.tokens("train")
    b = next(iter(ds.eval_batches("train", 16)))
    for r in range(16):
        segs = b["segment_ids"][r]
        ids = doc_ids[r * 16:(r + 1) * 16]
        assert segs[0] == 1
        np.testing.assert_array_equal(np.diff(segs) > 0, np.diff(ids) > 0)
    assert b["segment_ids"].max() > 1  # documents are short: several per row
    np.testing.assert_array_equal(b["inputs"][0], tokens[:16])


def test_corpus_shorter_than_one_sequence(tmp_path):
    (tmp_path / "t.txt").write_text("short text\n" * 3)
    cfg = data_cfg(tmp_path, source="files", path=str(tmp_path / "t.txt"), tokenizer="char")
    with pytest.raises(ValueError, match="split 'files/train' has 29 tokens.*seq_len"):
        build_dataset(cfg, 64)


def test_copy_task_layout(tmp_path):
    cfg = data_cfg(tmp_path, source="copy", copy_vocab=10, copy_prefix_len=5, eval_tokens=200)
    ds = build_dataset(cfg, 24, seed=0)
    assert ds.vocab_size == 11
    b = next(ds.train_iterator(3, seed=0))
    # 24 + 1 tokens hold two examples of 11: prefix, separator, copy
    for r in range(3):
        row = np.concatenate([b["inputs"][r], b["targets"][r, -1:]])
        for k in range(2):
            ex = row[11 * k:11 * (k + 1)]
            assert ex[5] == 10 and (ex[:5] == ex[6:]).all()
        w = b["weights"][r]
        assert w.sum() == 10
        np.testing.assert_array_equal(b["targets"][r][w > 0], np.concatenate([row[6:11], row[17:22]]))
    assert (b["segment_ids"][:, 22:] == 0).all() and (b["segment_ids"][:, :22] == 1).all()
    np.testing.assert_array_equal(ds.tokens("train")[:24], b["inputs"][0])
    it = ds.train_iterator(3, seed=0)
    next(it)
    resumed = ds.train_iterator(3, seed=0)
    resumed.restore(it.state())
    assert equal(next(it), next(resumed))
    cfg.copy_prefix_len = 13
    with pytest.raises(ValueError, match="copy_prefix_len=13.*<= 12"):
        build_dataset(cfg, 24)


def test_bad_config_values(tmp_path):
    with pytest.raises(ConfigError, match="data.sorce"):
        data_config(sorce="stdlib")
    with pytest.raises(ConfigError, match="data.source='nope'"):
        build_dataset(data_cfg(tmp_path, source="nope"), 16)
    with pytest.raises(ConfigError, match="data.tokenizer='words'"):
        build_dataset(data_cfg(tmp_path, tokenizer="words"), 16)
