"""Data faults: identity by content (a touched file resumes, a changed one does not), reading a
workdir without writing to it, SFT/DPO fields of the wrong type."""

import json
import os

import numpy as np
import pytest

from lm.config import ConfigError
from lm.data import build_dataset, data_config, prepare, sources


def _files(tmp_path, text="to be or not to be\n" * 300):
    (tmp_path / "corpus").mkdir(exist_ok=True)
    (tmp_path / "corpus" / "a.txt").write_text(text)
    return tmp_path / "corpus" / "a.txt"


def _cfg(tmp_path, **kw):
    return data_config(source="files", path=str(tmp_path / "corpus"), data_dir=str(tmp_path / "cache"), **kw)


@pytest.mark.parametrize("kind", ["byte", "char"])
def test_touched_file_resumes_changed_file_is_refused(tmp_path, monkeypatch, kind):
    """ST09: same bytes with a new mtime (a re-copied file) is the same data; other bytes of the
    same size are not."""
    path = _files(tmp_path)
    cfg, work = _cfg(tmp_path, tokenizer=kind), tmp_path / "work"
    first = build_dataset(cfg, 16, workdir=str(work))
    os.makedirs(work / "checkpoints" / "5")  # a run trained with this tokenizer
    stores = sorted(os.listdir(tmp_path / "cache" / "store"))
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched
    again = build_dataset(cfg, 16, workdir=str(work))
    np.testing.assert_array_equal(again.tokens("train"), first.tokens("train"))
    assert sorted(os.listdir(tmp_path / "cache" / "store")) == stores  # the same store, not a new one
    # the hash of an unchanged file is cached by (path, size, mtime): not read again
    monkeypatch.setattr(sources, "sha256_file", lambda p: pytest.fail(f"re-hashed {p}"))
    build_dataset(cfg, 16, workdir=str(work))
    monkeypatch.undo()
    path.write_text(path.read_text().replace("to be", "TO BE"))  # same size, other bytes
    assert os.path.getsize(path) == st.st_size
    with pytest.raises(ConfigError, match="use a new --workdir") as e:
        build_dataset(cfg, 16, workdir=str(work))
    assert "\n" not in str(e.value)


def test_workdir_saved_with_mtime_identity_still_resumes(tmp_path):
    """A workdir tokenizer saved by an older lm (files identified by mtime) is recognised."""
    _files(tmp_path)
    cfg, work = _cfg(tmp_path, tokenizer="char"), tmp_path / "work"
    build_dataset(cfg, 16, workdir=str(work))
    os.makedirs(work / "checkpoints" / "5")
    meta_path = work / "tokenizer" / "tokenizer.json"
    meta = json.loads(meta_path.read_text())
    source = sources.open_source(cfg, strict=True)
    meta["data"]["source"] = prepare.legacy_source(source)  # as the older lm wrote it
    meta_path.write_text(json.dumps(meta))
    build_dataset(cfg, 16, workdir=str(work))  # no refusal
    assert json.loads(meta_path.read_text())["data"] == prepare.tokenizer_spec(cfg, source)  # updated
