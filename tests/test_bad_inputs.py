"""Bad inputs and faults, as a new user and a fault injector meet them.

Battery: every command, run in-process through lm.cli.main (fresh flags per call), must end a
bad input with exit status != 0, exactly one stderr line `lm COMMAND: error: ...` naming the
problem, no traceback, and every pre-existing file byte-identical. Fault tests: a corrupt
newest checkpoint, a NaN learning rate, two trainers, SIGTERM mid-training, an archive that
cannot be written. Tiny Markov configs keep compiles small.
"""

import contextlib
import errno
import gzip
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import warnings

import jax
import numpy as np
import pytest

import lm.cli
from lm import archive, checkpoint, experiment, guard, runs, trainer
from lm import workdir as workdir_files
from lm.config import base_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

EXPERIMENT = '''
from lm.config import base_config
from lm.experiment import apply_rung, ladder


def get_config(arg=None):
    c = base_config()
    c.data.update(source="markov", train_tokens=20_000, eval_tokens=2_000)
    c.model.update(d_model=8, num_layers=1, num_heads=2, max_len=16)
    c.train.update(steps=4, batch_size=4, warmup_steps=0, schedule="constant", log_every=1,
                   eval_every=4, eval_batches=1, checkpoint_every=2, keep_checkpoints=1,
                   sample_tokens=0)
    c.mesh.data = 1
    c.experiment.update(name="tiny", hypothesis="h", metric="loss", comparator="<=", threshold=0.1)
    c.experiment.ladder = ladder(xs={"model.d_model": 8}, s={"model.d_model": 16})
    return apply_rung(c, arg)
'''


def lm_main(*argv):
    """(exit status, stdout, stderr) of `lm ARGV` run in this process."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            lm.cli.main(["lm", *argv])
        except SystemExit as e:
            if isinstance(e.code, str):
                print(e.code, file=sys.stderr)
                code = 1
            else:
                code = e.code or 0
    return code, out.getvalue(), err.getvalue()


def snapshot(*roots):
    """sha256 of every file under the roots (and the file list)."""
    files = {}
    for root in roots:
        for d, _, names in os.walk(root):
            for n in names:
                p = os.path.join(d, n)
                with open(p, "rb") as f:
                    files[p] = hashlib.sha256(f.read()).hexdigest()
    return files




@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """An experiment file, files of bad configs and data, an archive of two records and a
    workdir with a checkpoint (random weights, no training step compiled)."""
    root = tmp_path_factory.mktemp("world")
    w = {"root": str(root)}
    (root / "exp.py").write_text(EXPERIMENT)
    (root / "syntax.py").write_text("def get_config(arg=None):\n    return (\n")
    (root / "raises.py").write_text("def get_config(arg=None):\n    raise RuntimeError('boom')\n")
    (root / "raises_value.py").write_text("def get_config(arg=None):\n    raise ValueError('bad value 7')\n")
    (root / "no_get_config.py").write_text("x = 1\n")
    (root / "a_file").write_text("not a directory\n")
    data = gzip.compress(b"hello world " * 4000)
    (root / "cut.txt.gz").write_bytes(data[:len(data) // 2])
    (root / "bad.jsonl").write_text('{"text": "ok"}\n{not json\n')
    for k in ("exp", "syntax", "raises", "raises_value", "no_get_config"):
        w[k] = str(root / f"{k}.py")
    for k in ("a_file", "cut.txt.gz", "bad.jsonl"):
        w[k] = str(root / k)

    # An archive: two records of the experiment (fake training: no compile).
    arch = str(root / "archive")
    from tests.test_experiment import fake_train

    for rung in ("xs", "s"):
        experiment.run(w["exp"], rung, archive_dir=arch, train_fn=fake_train(floor=0.5),
                       progress=False)
    w["archive"] = arch
    gone = root / "gone.py"  # a record whose experiment file was deleted afterwards
    gone.write_text(EXPERIMENT.replace('name="tiny"', 'name="gone"'))
    w["gone_id"] = experiment.run(str(gone), "xs", archive_dir=arch, train_fn=fake_train(floor=0.5),
                                  progress=False)[0]["id"]
    os.remove(gone)
    by_rung = {r["rung"]: r["id"] for r in archive.load_records(arch) if r["experiment"] == "tiny"}
    w["ids"] = [by_rung["xs"], by_rung["s"]]

    # A workdir as `lm train` leaves it, with a checkpoint of random weights.
    wd = str(root / "workdir")
    config = experiment.load_config(w["exp"], "xs")
    run = runs.setup(config, wd)
    with open(os.path.join(wd, "config.json"), "w") as f:
        json.dump(run.config.to_dict(), f, default=str)
    rng = np.random.default_rng(0)
    state = jax.tree.map(lambda s: jax.device_put(rng.normal(0, 0.3, s.shape).astype(s.dtype), s.sharding),
                         run.abstract_state)
    ck = checkpoint.Checkpoints(wd, async_save=False)
    ck.save(2, state, {})
    ck.close()
    w["workdir"] = wd
    import shutil

    bad_tok = str(root / "bad_tokenizer_workdir")
    shutil.copytree(wd, bad_tok)
    with open(os.path.join(bad_tok, "tokenizer", "tokenizer.json"), "w") as f:
        f.write('{"kind": ')
    w["bad_tok_workdir"] = bad_tok
    os.makedirs(str(root / "empty_workdir"))
    w["empty_workdir"] = str(root / "empty_workdir")
    bad_json = str(root / "bad_json_workdir")
    os.makedirs(bad_json)
    with open(os.path.join(bad_json, "config.json"), "w") as f:
        f.write('{"model": ')
    w["bad_json_workdir"] = bad_json
    list_json = str(root / "list_json_workdir")  # config.json that is a JSON list
    shutil.copytree(wd, list_json)
    with open(os.path.join(list_json, "config.json"), "w") as f:
        f.write('[1, 2]')
    w["list_json_workdir"] = list_json
    return w


def _cases(w):
    exp, arch, wd = w["exp"], w["archive"], w["workdir"]
    new_wd = os.path.join(w["root"], "new_workdir")
    a = f"--archive={arch}"
    first, second = w["ids"]
    common = first[:8]  # a prefix both ids share
    return [
        # lm train
        (["train", f"--config={exp}:nope", f"--workdir={new_wd}"], "unknown rung 'nope'"),
        (["train", "--config=/nonexistent/x.py", f"--workdir={new_wd}"], "no such config file"),
        (["train", f"--config={w['syntax']}", f"--workdir={new_wd}"], "syntax error"),
        (["train", f"--config={w['raises']}", f"--workdir={new_wd}"], "get_config raised RuntimeError: boom"),
        (["train", f"--config={w['raises_value']}", f"--workdir={new_wd}"], "bad value 7"),
        (["train", f"--config={exp}", "--config.train.stepz=3", f"--workdir={new_wd}"], "unknown config key"),
        (["train", f"--config={exp}", "--config.train.steps=abc", f"--workdir={new_wd}"], "--config.train.steps=abc"),
        (["train", f"--workdir={new_wd}"], "--config=experiments/FILE.py[:RUNG] is required"),
        (["train", f"--config={exp}"], "--workdir is required"),
        (["train", f"--config={exp}", f"--workdir={w['a_file']}"], "is a file, not a directory"),
        (["train", f"--config={exp}", f"--workdir={w['a_file']}/sub"], "a file"),
        (["train", f"--config={exp}", f"--workdir={new_wd}", "stray"], "unexpected arguments"),
        (["train", f"--config={exp}", f"--workdir={w['bad_json_workdir']}"], "config.json: not valid JSON"),
        (["train", f"--config={exp}", "--config.model.d_model=16", f"--workdir={wd}"], "holds a run with model.d_model=8"),
        (["train", f"--config={exp}", "--config.model.kernel=nope", f"--workdir={new_wd}"], "model.kernel"),
        (["train", f"--config={exp}", "--config.train.steps=0", f"--workdir={new_wd}"], "train.steps=0"),
        (["train", f"--config={exp}", "--config.data.source=files", f"--config.data.path={w['cut.txt.gz']}",
          f"--workdir={new_wd}"], "truncated or corrupt"),
        (["train", f"--config={exp}", "--config.data.source=files", f"--config.data.path={w['bad.jsonl']}",
          f"--workdir={new_wd}"], "bad.jsonl: cannot read it"),
        (["train", f"--config={exp}", "--config.data.source=files", "--config.data.path=/nonexistent.txt",
          f"--workdir={new_wd}"], "no such file"),
        (["train", f"--config={exp}", "--config.data.source=hf", "--config.data.hf_name=a/b",
          f"--workdir={new_wd}"], "needs the Hugging Face hub"),
        (["train", f"--config={exp}", "--workdir=/sys/lm_not_writable"], "/sys/lm_not_writable"),
        # lm eval / lm sample
        (["eval"], "--workdir=DIR"),
        (["eval", "--workdir=/nonexistent/wd"], "no such directory"),
        (["eval", f"--workdir={w['empty_workdir']}"], "no config.json"),
        (["eval", f"--workdir={wd}", "--checkpoint=999"], "no checkpoint for step 999"),
        (["eval", f"--workdir={wd}", "--split=bogus"], "--split='bogus'"),
        (["sample", f"--workdir={w['bad_tok_workdir']}"], "tokenizer.json is unreadable"),
        (["sample", f"--workdir={wd}", "--temperature=-1"], "temperature"),
        (["sample", f"--workdir={wd}", "--top_p=0"], "top_p"),
        (["sample", f"--workdir={wd}", "--max_new_tokens=-5"], "max_new_tokens"),
        (["sample", f"--workdir={wd}", "--prompt=\x00\x01"], "symbol tokenizer"),
        (["sample", f"--workdir={wd}", "--temperature=nan"], "temperature must be a finite number"),
        (["sample", f"--workdir={wd}", "--temperature=inf"], "temperature must be a finite number"),
        (["sample", f"--workdir={wd}", "--top_p=nan"], "top_p"),
        (["sample", f"--workdir={wd}", "--top_k=-1"], "top_k"),
        (["sample", f"--workdir={wd}", "--max_new_tokens=100000000"], "more than 1,000,000"),
        (["eval", f"--workdir={w['list_json_workdir']}"], "config.json: a JSON list, not an object"),
        (["sample", f"--workdir={w['list_json_workdir']}"], "config.json: a JSON list, not an object"),
        (["train", f"--config={exp}", f"--workdir={w['list_json_workdir']}"], "config.json: a JSON list"),
        (["train", f"--config={w['no_get_config']}", f"--workdir={new_wd}"], "defines no get_config"),
        # lm baselines
        (["baselines", f"--config={exp}:nope"], "unknown rung 'nope'"),
        (["baselines"], "--config=experiments/FILE.py[:RUNG] is required"),
        (["baselines", f"--config={exp}", "--orders=x..y"], "orders"),
        # lm run
        (["run", exp, "--rung=nope", a], "unknown rung 'nope'"),
        (["run", f"{exp}:xs", "--rung=s", a], "rung given twice"),
        (["run", exp, "--set=foo", a], "--set expects key=value"),
        (["run", exp, "--set=train.stepz=3", a], "unknown config key 'train.stepz'"),
        (["run", exp, "--set=train.steps=abc", a], "cannot read 'abc' as int"),
        (["run", exp, "--set=model.kernel=nope", a], "model.kernel"),
        (["run", "/nonexistent/exp.py", a], "does not exist"),
        (["run", w["syntax"], a], "syntax error"),
        (["run", w["raises"], a], "get_config(None) raised RuntimeError: boom"),
        (["run", w["no_get_config"], a], "must define get_config"),
        (["run", exp, "--workdir=/sys/lm_not_writable", a], "--workdir=/sys/lm_not_writable is not writable"),
        (["run", exp, "--archive=/sys/lm_not_writable"], "--archive=/sys/lm_not_writable is not writable"),
        (["baselines", f"--config={exp}", "--orders=0", "--nocompressors", "--out=/sys/lm_x/b.json"],
         "could not write --out=/sys/lm_x/b.json"),
        (["archive", "report", a, "--out=/sys/lm_not_writable"], "/sys/lm_not_writable"),
        # lm archive
        (["archive", "frob", a], "unknown subcommand 'frob'"),
        (["archive", "show", "nope", a], "no record with id 'nope'"),
        (["archive", "show", common, a], "matches 3 records"),
        (["archive", "rerun", w["gone_id"], a], "gone.py' not found"),
        (["archive", "show", a], "usage: lm archive show ID"),
        (["archive", "list", "--archive=/nonexistent/archive"], "no such directory"),
        (["archive", "list", "--status=bogus", a], "--status='bogus'"),
        (["archive", "rerun", first, "--status=not_yet", a], "not both"),
        (["archive", "rerun", second, "--rung=nope", a], "unknown rung 'nope'"),
        (["archive", "rerun", second, "--rung=next", a], "top of the ladder"),
    ]


def test_battery_of_bad_inputs(world, monkeypatch):
    monkeypatch.setenv("LM_OFFLINE", "1")
    cases = _cases(world)
    assert len(cases) >= 40
    before = snapshot(world["root"])
    failures = []
    for argv, expect in cases:
        code, out, err = lm_main(*argv)
        lines = err.strip().splitlines()
        errors = [line for line in lines if "error" in line]
        ok = (code != 0 and errors == lines[-1:] and lines[-1].startswith(f"lm {argv[0]}: error: ")
              and expect in lines[-1] and "Traceback" not in err)
        if not ok:
            failures.append(f"{argv}: code={code} stderr={err[-800:]!r}")
    assert not failures, "\n".join(failures)
    assert snapshot(world["root"]) == before  # nothing written or changed, incl. the archive
    assert not os.path.exists(os.path.join(world["root"], "new_workdir", "config.json"))


def test_debug_shows_the_traceback(world):
    """--debug lets the exception through (Python prints its traceback)."""
    from lm.config import ConfigError

    with pytest.raises(ConfigError, match="RuntimeError: boom") as e:
        lm.cli.main(["lm", "run", world["raises"], f"--archive={world['archive']}", "--debug"])
    assert isinstance(e.value.__cause__, RuntimeError)
    assert lm_main("run", world["raises"], f"--archive={world['archive']}")[0] == 1  # off again


def test_baselines_out_under_a_file_keeps_the_results(world):
    code, out, err = lm_main("baselines", f"--config={world['exp']}", "--orders=0..1",
                             "--nocompressors", f"--out={world['a_file']}/b.json")
    assert code == 1 and "n-grams" in out  # the computed table was printed
    assert err.strip().splitlines()[-1].startswith("lm baselines: error: could not write --out=")
    assert "table printed above" in err


def test_report_skips_records_missing_fields(world, tmp_path):
    arch = str(tmp_path / "arch")
    os.makedirs(arch)
    for r in archive.load_records(world["archive"]):
        archive.write_record({k: v for k, v in r.items() if not k.startswith("_")}, arch)
    archive.write_record({"id": "x-broken-fields", "schema": archive.SCHEMA, "experiment": "tiny"}, arch)
    with open(os.path.join(arch, "junk.json"), "w") as f:
        f.write("{not json")
    code, out, err = lm_main("archive", "report", f"--archive={arch}", f"--out={tmp_path}/rep")
    assert code == 0, err
    assert "Traceback" not in err
    warn = [l for l in err.splitlines() if "warning" in l]
    assert any("x-broken-fields" in l and "criterion" in l for l in warn), err
    assert any("junk.json" in l and "unreadable JSON" in l for l in warn), err
    assert os.path.exists(f"{tmp_path}/rep/report.md")


def test_rerun_status_skips_an_unrunnable_series(world, tmp_path, monkeypatch):
    """One series whose experiment file is gone does not abort the others; a first miss
    (one rung, not_yet: no trend yet) is rerun by --status=not_yet."""
    from tests.test_experiment import fake_train

    arch = str(tmp_path / "arch")
    gone = tmp_path / "gone.py"
    gone.write_text(EXPERIMENT.replace('name="tiny"', 'name="gone"'))
    experiment.run(str(gone), "xs", archive_dir=arch, train_fn=fake_train(floor=0.5), progress=False)
    experiment.run(world["exp"], "xs", archive_dir=arch, train_fn=fake_train(floor=0.5), progress=False)
    assert {r["verdict"] for r in archive.load_records(arch)} == {"not_yet"}
    os.remove(gone)
    monkeypatch.setattr(trainer, "train", fake_train(floor=0.5))
    code, out, err = lm_main("archive", "rerun", "--status=not_yet", "--rung=next", f"--archive={arch}",
                             "--noprogress")
    assert code == 1, err  # one series failed
    assert "cannot rerun" in err and "gone.py" in err and "skipped" in err
    assert "Traceback" not in err
    recs = archive.load_records(arch)
    assert len(recs) == 3 and any(r.get("parent") and r["experiment"] == "tiny" for r in recs)


# ----------------------------------------------------------------------------- faults

def _config(steps=4, **train):
    c = base_config()
    c.data.update(source="markov", train_tokens=20_000, eval_tokens=2_000)
    c.model.update(d_model=8, num_layers=1, num_heads=2, max_len=16)
    c.train.update(steps=steps, batch_size=4, warmup_steps=0, schedule="constant", log_every=1,
                   eval_every=0, eval_batches=1, checkpoint_every=2, keep_checkpoints=3,
                   sample_tokens=0)
    c.train.update(**train)
    c.mesh.data = 1
    return c


def _params(workdir, step=None):
    run, state = runs.load_run(workdir, step=step)
    return [np.asarray(x) for x in jax.tree.leaves(state["params"])], int(state["step"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 4-step run with checkpoints at 2 and 4 (the reference for the fault tests)."""
    wd = str(tmp_path_factory.mktemp("trained"))
    trainer.train(_config(), wd, progress=False)
    return wd


def _damage(workdir, step, how):
    d = os.path.join(workdir, "checkpoints", str(step))
    files = sorted(os.path.join(a, n) for a, _, ns in os.walk(os.path.join(d, "state")) for n in ns)
    big = max(files, key=os.path.getsize)
    if how == "bytes":
        with open(big, "r+b") as f:
            f.seek(os.path.getsize(big) // 2)
            f.write(b"\xff" * 64)
    elif how == "truncated":
        with open(big, "r+b") as f:
            f.truncate(os.path.getsize(big) // 3)
    elif how == "no_state":
        import shutil
        shutil.rmtree(os.path.join(d, "state"))
    elif how == "empty":
        import shutil
        shutil.rmtree(d)
        os.makedirs(d)
    elif how == "manifests":  # OCDBT's manifests: TensorStore fails mid-read
        for a, _, ns in os.walk(d):
            for n in ns:
                if n == "manifest.ocdbt":
                    os.remove(os.path.join(a, n))


@pytest.mark.parametrize("how", ["bytes", "truncated", "no_state", "empty", "manifests"])
def test_damaged_newest_checkpoint_falls_back(trained, tmp_path, how):
    import shutil

    wd = str(tmp_path / "wd")
    shutil.copytree(trained, wd)
    good, _ = _params(wd, step=2)
    _damage(wd, 4, how)
    with pytest.warns(checkpoint.CheckpointWarning, match="checkpoint 4 .* falling back to step 2"):
        params, step = _params(wd)
    assert step == 2
    for a, b in zip(good, params):
        np.testing.assert_array_equal(a, b)
    if how == "manifests":  # one warning line, none of TensorStore's "Event loop is closed"
        code, out, err = lm_main("eval", f"--workdir={wd}", "--max_batches=1")
        assert code == 0 and json.loads(out)["checkpoint"] == 2, err
        assert err.strip().splitlines()[0].startswith("lm eval: warning: checkpoint 4")
        assert "Traceback" not in err and "Event loop is closed" not in err, err
    if how == "bytes":  # lm eval says so in one warning line and still works
        code, out, err = lm_main("eval", f"--workdir={wd}", "--max_batches=1")
        assert code == 0 and json.loads(out)["checkpoint"] == 2, err
        assert "lm eval: warning: checkpoint 4" in err and "Traceback" not in err
        # the trainer resumes from 2, moves 4 aside and reaches step 4 again
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", checkpoint.CheckpointWarning)
            trainer.train(_config(), wd, progress=False)
        assert os.listdir(os.path.join(wd, "corrupt_checkpoints"))[0].startswith("4-")
        ref, _ = _params(trained)
        for a, b in zip(ref, _params(wd)[0]):
            np.testing.assert_array_equal(a, b)  # the resumed run is exact


def test_nan_learning_rate_stops_and_keeps_the_last_finite_checkpoint(trained, tmp_path):
    import shutil

    wd = str(tmp_path / "wd")
    shutil.copytree(trained, wd)
    with pytest.raises(guard.NonFiniteError, match="training diverged: learning_rate is nan at step 5.*step 4\\) is kept"):
        trainer.train(_config(steps=12, learning_rate=float("nan"), keep_checkpoints=1), wd,
                      progress=False)
    assert max(checkpoint.step_dirs(os.path.join(wd, "checkpoints"))) == 4  # nothing NaN saved
    params, step = _params(wd)
    assert step == 4 and all(np.isfinite(p).all() for p in params)
    # as a command: one line, exit 1
    code, _, err = lm_main("train", f"--config={_write_exp(tmp_path)}", "--config.train.steps=12",
                           "--config.train.learning_rate=nan", f"--workdir={wd}", "--noprogress")
    assert code == 1 and err.strip().splitlines()[-1].startswith("lm train: error: training diverged")


def _write_exp(tmp_path):
    p = tmp_path / "exp.py"
    p.write_text(EXPERIMENT.replace("eval_every=4", "eval_every=0").replace("keep_checkpoints=1",
                                                                           "keep_checkpoints=3"))
    return str(p)


def test_second_trainer_refuses_and_a_dead_ones_lock_is_taken_over(trained, tmp_path):
    import shutil

    wd = str(tmp_path / "wd")
    shutil.copytree(trained, wd)
    other = subprocess.Popen(["sleep", "60"])  # a live process holding the lock
    try:
        with open(os.path.join(wd, guard.LOCK_NAME), "w") as f:
            f.write(f"{other.pid} {__import__('socket').gethostname()}\n")
        before = snapshot(wd)
        code, _, err = lm_main("train", f"--config={_write_exp(tmp_path)}", f"--workdir={wd}",
                               "--noprogress")
        assert code == 1 and len(err.strip().splitlines()) == 1
        assert f"in use by another trainer (pid {other.pid}" in err
        assert snapshot(wd) == before
    finally:
        other.kill()
        other.wait()
    # now the pid is dead: its lock is stale and the next trainer takes it over (and releases it)
    summary = trainer.train(_config(steps=6), wd, progress=False)
    assert summary["step"] == 6 and not os.path.exists(os.path.join(wd, guard.LOCK_NAME))


def test_sigterm_saves_at_the_next_step_and_resumes_exactly(trained, tmp_path, monkeypatch):
    wd = str(tmp_path / "wd")
    check = guard.Guard.check_metrics

    def kill_at_3(self, record):
        if record["step"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # delivered to the guard's handler
        return check(self, record)

    monkeypatch.setattr(guard.Guard, "check_metrics", kill_at_3)
    with pytest.raises(guard.Stopped, match="stopped by SIGTERM after step 3") as e:
        trainer.train(_config(), wd, progress=False)
    assert e.value.exit_code == 128 + signal.SIGTERM
    assert checkpoint.step_dirs(os.path.join(wd, "checkpoints")) == [2, 3]  # 3: at the signal
    monkeypatch.setattr(guard.Guard, "check_metrics", check)
    trainer.train(_config(), wd, progress=False)
    assert [r["step"] for r in workdir_files.read_metrics(wd)] == [1, 2, 3, 4]
    for a, b in zip(_params(trained)[0], _params(wd)[0]):
        np.testing.assert_array_equal(a, b)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))


def test_archive_not_writable_keeps_the_results(world, tmp_path, monkeypatch):
    from tests.test_experiment import fake_train

    arch = str(tmp_path / "arch")
    os.makedirs(arch)

    def refuse(record, archive_dir):
        raise OSError(errno.EROFS, "Read-only file system", archive_dir)

    monkeypatch.setattr(archive, "write_record", refuse)
    with pytest.raises(experiment.RecordNotWritten, match="results are kept in (.*)record.json") as e:
        experiment.run(world["exp"], "xs", archive_dir=arch, train_fn=fake_train(floor=0.5),
                       progress=False)
    kept = str(e.value).split("results are kept in ")[1].split(" ")[0]
    with open(kept) as f:
        rec = json.load(f)
    assert rec["verdict"] == "not_yet" and rec["final"]["loss"] > 0
    monkeypatch.undo()

    # a full disk mid-write leaves no temp file in the archive
    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(json, "dump", full)
    with pytest.raises(OSError):
        archive.write_record(dict(rec, id="x"), arch)
    monkeypatch.undo()
    assert os.listdir(arch) == []


def test_lm_run_stops_config_errors_and_killed_runs(world, tmp_path, monkeypatch):
    """Under `lm run`: a stopped trainer gives a broken record (no exception, temp workdir
    removed); a config error inside training is an error, not a record; the temp workdir of
    a killed run (its lock names a dead process) is removed by the next run."""
    import tempfile

    from lm.config import ConfigError

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    os.makedirs(tempfile.tempdir)
    dead = subprocess.Popen(["true"])
    dead.wait()
    abandoned = os.path.join(tempfile.tempdir, experiment.TEMP_PREFIX + "tiny-xs-killed")
    os.makedirs(abandoned)
    with open(os.path.join(abandoned, guard.LOCK_NAME), "w") as f:
        f.write(f"{dead.pid} {__import__('socket').gethostname()}\n")
    arch = str(tmp_path / "arch")
    seen = []

    def stopped(config, workdir, progress=True):
        seen.append(workdir)
        raise guard.Stopped("stopped by SIGTERM after step 3; ...", signal.SIGTERM)

    record, out = experiment.run(world["exp"], "xs", archive_dir=arch, train_fn=stopped, progress=False)
    assert record["verdict"] == "broken" and "Stopped: stopped by SIGTERM" in record["reason"]
    assert os.path.exists(out) and not os.path.exists(seen[0]) and not os.path.exists(abandoned)

    def bad_config(config, workdir, progress=True):
        raise ConfigError("model.kernel: unknown kernel 'nope'")

    with pytest.raises(ConfigError):
        experiment.run(world["exp"], "xs", archive_dir=arch, train_fn=bad_config, progress=False)
    assert len(archive.load_records(arch)) == 1 and os.listdir(tempfile.tempdir) == []


def test_workdir_remembers_where_its_data_came_from(tmp_path, monkeypatch):
    """data.json holds the resolved data location: `lm eval` works from another directory."""
    from lm import workdir as workdir_files

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "corpus.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 200)
    monkeypatch.chdir(tmp_path)
    c = _config()
    c.data.update(source="files", path="data/corpus.txt", tokenizer="byte")  # relative to here
    wd = str(tmp_path / "wd")
    run = runs.setup(c, wd)
    with open(os.path.join(wd, "config.json"), "w") as f:
        json.dump(run.config.to_dict(), f, default=str)
    workdir_files.write_data_location(wd, run.config.data)
    ck = checkpoint.Checkpoints(wd, async_save=False)
    ck.save(1, runs.init_state(run), {})
    ck.close()
    with open(os.path.join(wd, "data.json")) as f:
        assert json.load(f)["path"] == str(tmp_path / "data" / "corpus.txt")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # data/corpus.txt no longer resolves from here
    code, out, err = lm_main("eval", f"--workdir={wd}", "--max_batches=1")
    assert code == 0, err
    assert json.loads(out)["tokens"] > 0


def test_config_that_does_not_match_the_checkpoints_is_named_not_called_damaged(trained, tmp_path):
    """Intact checkpoints of another config (an optimizer with another state, an edited
    config.json): one line naming the differing config keys and arrays; nothing moved aside."""
    import shutil

    wd = str(tmp_path / "wd")
    shutil.copytree(trained, wd)
    ckpts = os.path.join(wd, "checkpoints")
    before, config_before = snapshot(ckpts), open(os.path.join(wd, "config.json")).read()
    code, _, err = lm_main("train", f"--config={_write_exp(tmp_path)}", "--config.train.optimizer=muon",
                           "--config.train.steps=6", f"--workdir={wd}", "--noprogress")
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert "written by a different config" in lines[0] and "intact" in lines[0]
    assert "train.optimizer: checkpoint 'adamw' vs config 'muon'" in lines[0]
    assert "damaged" not in err and not os.path.exists(os.path.join(wd, "corrupt_checkpoints"))
    assert snapshot(ckpts) == before
    assert open(os.path.join(wd, "config.json")).read() == config_before  # the refused config is not kept

    with open(os.path.join(trained, "config.json")) as f:
        edited = json.load(f)
    edited["model"]["d_model"] = 16
    with open(os.path.join(wd, "config.json"), "w") as f:
        json.dump(edited, f)
    code, _, err = lm_main("eval", f"--workdir={wd}")
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert "model.d_model: checkpoint 8 vs config 16" in lines[0]
    assert "params/decoder/" in lines[0] and "checkpoint [" in lines[0] and "vs config [" in lines[0]
    assert snapshot(ckpts) == before


@contextlib.contextmanager
def _small_disk(path, size):
    """A real tmpfs of `size` at `path` (needs the right to mount, as root in a container)."""
    os.makedirs(path)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here to fill a disk ({done.stderr.strip()})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", path], check=True)  # lazy: Orbax's pool may hold a file


def test_full_disk_during_a_checkpoint_save_is_one_line_and_keeps_the_older_one(tmp_path):
    """Room for one checkpoint, not two: the second save fails in Orbax's background threads;
    one line (no Orbax log tracebacks), exit 1, and checkpoint 2 still restores."""
    with _small_disk(str(tmp_path / "disk"), "260k") as disk:
        wd = os.path.join(disk, "wd")
        code, _, err = lm_main("train", f"--config={_write_exp(tmp_path)}", f"--workdir={wd}",
                               "--noprogress")
        lines = err.strip().splitlines()
        assert code == 1 and "Traceback" not in err and len(lines) == 1, err
        assert "could not write checkpoint 4" in lines[0] and "no space left on device" in lines[0]
        assert checkpoint.step_dirs(os.path.join(wd, "checkpoints")) == [2]
        params, step = _params(wd)
        assert step == 2 and all(np.isfinite(p).all() for p in params)


def test_sample_zero_new_tokens_prints_the_prompt(world):
    code, out, err = lm_main("sample", f"--workdir={world['workdir']}", "--prompt=1 2",
                             "--max_new_tokens=0")
    assert code == 0 and out == "1 2\n", err
    assert "generated max_new_tokens=0 tokens" in err and "Traceback" not in err


def test_metrics_line_that_is_not_utf8_is_named_and_skipped(tmp_path):
    from lm import workdir as workdir_files

    (tmp_path / "metrics.jsonl").write_bytes(b'{"step": 1}\n{"step": \xff\xfe2}\n{"step": 3}\n')
    with pytest.warns(UserWarning, match=r"metrics.jsonl, line 2: not UTF-8"):
        rows = workdir_files.read_metrics(str(tmp_path))
    assert [r["step"] for r in rows] == [1, 3]


def _hf_copy(tmp_path, name):
    import shutil

    return shutil.copytree(os.path.join(ROOT, "tests", "fixtures", "hf", "gpt2"), tmp_path / name)


def test_hf_import_and_export_faults_are_one_line(tmp_path):
    """NaN weights, a config.json list, a truncated safetensors file: refused at import naming
    the file (and tensor), no workdir left; an export to a full disk names --out, writes nothing."""
    from lm.hf.safetensors_io import SafetensorsDir, save_file

    with open(os.path.join(ROOT, "tests", "fixtures", "hf", "gpt2", "prompt.txt"), encoding="utf-8") as f:
        (tmp_path / "text.txt").write_text(f.read() * 3)  # one 640-token sequence in each split
    data = ["--data_source=files", f"--data_path={tmp_path / 'text.txt'}"]
    nan = _hf_copy(tmp_path, "nan")
    store = SafetensorsDir(str(nan))
    tensors = {n: np.array(store.read(n), np.float32) for n in store.names}
    tensors["transformer.h.1.mlp.c_fc.weight"][3, 5] = np.nan
    save_file(tensors, str(nan / "model.safetensors"))
    listed = _hf_copy(tmp_path, "listed")
    (listed / "config.json").write_text("[1, 2, 3]")
    cut = _hf_copy(tmp_path, "cut")
    with open(cut / "model.safetensors", "r+b") as f:
        f.truncate(100_000)
    cases = [(nan, "tensor 'transformer.h.1.mlp.c_fc.weight' holds 1 NaN/Inf values"),
             (listed, "config.json: a list, not a JSON object"),
             (cut, "model.safetensors: truncated (100000 bytes")]
    for source, expect in cases:
        wd = str(tmp_path / f"wd_{source.name}")
        code, _, err = lm_main("import", str(source), f"--workdir={wd}", *data)
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 1 and expect in lines[0] and "Traceback" not in err, err
        assert not os.path.exists(wd)
        assert [p for p in os.listdir(tmp_path) if p.startswith(".import-")] == []

    wd = str(tmp_path / "wd")
    code, _, err = lm_main("import", str(_hf_copy(tmp_path, "good")), f"--workdir={wd}", *data)
    assert code == 0, err
    with _small_disk(str(tmp_path / "disk"), "100k") as disk:
        out = os.path.join(disk, "out")
        code, _, err = lm_main("export", f"--workdir={wd}", f"--out={out}")
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
        assert f"{out}: no space left on device" in lines[0]
        assert os.listdir(disk) == []
