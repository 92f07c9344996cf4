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


def test_workdir_saved_with_mtime_identity_still_resumes(tmp_path, monkeypatch):
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

    real_lock = prepare.file_lock

    def read_only(path):  # the workdir only: the store's lock lives in the data dir
        if path.startswith(str(work)):
            raise PermissionError(13, "Permission denied", path)
        return real_lock(path)

    with monkeypatch.context() as m:  # a read-only workdir: read as it is, nothing written
        m.setattr(prepare, "file_lock", read_only)
        build_dataset(cfg, 16, workdir=str(work))
    assert json.loads(meta_path.read_text()) == meta
    build_dataset(cfg, 16, workdir=str(work))  # writable: no refusal, the identity is updated
    assert json.loads(meta_path.read_text())["data"] == prepare.tokenizer_spec(cfg, source)


# ----------------------------------------------------------------------------- read-only workdir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_WRITE_EVENTS = ("os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.replace", "os.chmod", "os.symlink",
                 "shutil.rmtree", "os.truncate", "os.link")

# A read-only workdir as the kernel would enforce it for a user without write access (tests run
# as root, where chmod does not stop writes): an audit hook refuses every write under it.
READ_ONLY = r"""
import os, sys
ROOT = os.path.realpath(sys.argv.pop(1))
FLAGS, EVENTS = %d, %r

def under(p):
    try:
        return isinstance(p, (str, bytes, os.PathLike)) and os.path.realpath(os.fsdecode(p)).startswith(ROOT)
    except (TypeError, ValueError):
        return False

def hook(event, args):
    if event == "open" and under(args[0]):
        mode, flags = args[1], args[2] or 0
        if (isinstance(mode, str) and any(c in mode for c in "wax+")) or flags & FLAGS:
            raise PermissionError(13, "Read-only file system (test)", args[0])
    elif event in EVENTS and any(under(a) for a in args[:2]):
        raise PermissionError(13, "Read-only file system (test)", args[0])

sys.addaudithook(hook)
sys.argv[0] = "lm"
from lm.cli import main
main()
""" % (_WRITE_FLAGS, _WRITE_EVENTS)


def _run(args, env, timeout=600):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_eval_and_sample_read_a_workdir_without_writing_to_it(tmp_path):
    """O03/O04: `lm eval` and `lm sample` on a workdir they may not write to (they opened
    .tokenizer.lock for writing)."""
    from lm import trainer
    from lm.experiment import load_config

    _files(tmp_path)
    config = load_config(os.path.join(ROOT, "experiments/quickstart.py"), "tiny")
    config.data.update(source="files", path=str(tmp_path / "corpus"), tokenizer="char",
                       data_dir=str(tmp_path / "data"))
    config.train.update(steps=2, eval_every=2, sample_tokens=0)
    work = tmp_path / "run"
    trainer.train(config, str(work), progress=False)
    if (work / ".tokenizer.lock").exists():
        os.remove(work / ".tokenizer.lock")  # what a copy of the run (or another user's) lacks
    before = {p: os.stat(p).st_mtime_ns for p in work.rglob("*")}
    env = dict(os.environ, PYTHONPATH=ROOT)
    for cmd in (["sample", "--prompt=to be", "--max_new_tokens=5"], ["eval", "--max_batches=1"]):
        out = _run([READ_ONLY, str(work), *cmd, f"--workdir={work}"], env)
        assert out.returncode == 0, (cmd, out.stderr[-3000:])
        assert "Read-only" not in out.stderr, out.stderr[-3000:]
    assert {p: os.stat(p).st_mtime_ns for p in work.rglob("*")} == before


def test_synthetic_source_reopens_a_workdir_without_locking_it(tmp_path, monkeypatch):
    cfg = data_config(source="markov", markov_vocab=8, train_tokens=2000, eval_tokens=500)
    build_dataset(cfg, 16, workdir=str(tmp_path))
    monkeypatch.setattr(prepare, "file_lock", lambda p: pytest.fail(f"locked {p}"))
    assert build_dataset(cfg, 16, workdir=str(tmp_path)).vocab_size == 8


# ----------------------------------------------------------------------------- SFT / DPO fields

@pytest.mark.parametrize("source,row,message", [
    ("sft", {"prompt": "q", "response": 42}, r"field 'response' holds int 42, not text"),
    ("sft", {"prompt": ["a", "b"], "response": "r"}, r"field 'prompt' holds list \['a', 'b'\], not text"),
    ("preference", {"prompt": "q", "chosen": None, "rejected": "r"}, r"field 'chosen' holds NoneType None, not text"),
    ("preference", {"prompt": "q", "chosen": "c"}, r"missing text field\(s\) \['rejected'\]"),
    ("sft", ["q", "r"], r"example 1 is a JSON list, not an object"),
])
def test_post_training_field_of_the_wrong_type_is_named(tmp_path, source, row, message):
    good = {"prompt": "q", "response": "r", "chosen": "c", "rejected": "r"}
    path = tmp_path / "ex.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in (good, row, good, good)) + "\n")
    cfg = data_config(source=source, path=f"train={path},valid={path}", tokenizer="byte",
                      document_masking=True)
    with pytest.raises(ConfigError, match=message) as e:
        build_dataset(cfg, 32)
    assert "\n" not in str(e.value) and str(e.value).startswith("train example 1")
