"""`lm train` as a user runs it: kill -9 and resume, two processes, bad input."""

import hashlib
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

from lm import runs
from lm import workdir as workdir_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--config=experiments/quickstart.py:tiny", "--config.train.sample_tokens=0",
        "--config.train.log_every=5", "--config.train.eval_every=10",
        "--config.train.checkpoint_every=10", "--noprogress"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The subprocesses share a compilation cache: a resumed run reuses the first one's."""
    e = dict(os.environ)
    e.update(JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp("jax_cache")),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0", PYTHONPATH=ROOT)
    return e


def lm_train(args, env, **kw):
    return subprocess.run([sys.executable, "-m", "lm", "train", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, **kw)


def train_killed_after(step, config_code, workdir, env):
    """Train in a subprocess whose hook SIGKILLs it after `step` (its checkpoint, if any, saved):
    fault injection passed in, as a real kill -9 would land. config_code defines `config`."""
    code = (f"import os, signal, sys\nsys.path.insert(0, {os.path.join(ROOT, 'tests')!r})\n"
            f"from lm import trainer\n{config_code}\nhooks = trainer.Hooks()\n"
            f"hooks.add_hook(lambda step, state: os.kill(os.getpid(), signal.SIGKILL), every={step})\n"
            f"trainer.train(config, {str(workdir)!r}, progress=False, hooks=hooks)\n")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def params_of(workdir):
    _, _, params, _ = runs.load_workdir(workdir)
    return [np.asarray(x) for x in __import__("jax").tree.leaves(params)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, env):
    """An uninterrupted 20-step run on the 8 simulated devices of one process."""
    workdir = str(tmp_path_factory.mktemp("ref"))
    out = lm_train(TINY + [f"--workdir={workdir}"], env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "step 20: valid loss" in out.stdout
    return workdir


def test_kill_9_then_rerun_resumes_exactly(tmp_path, env, reference):
    workdir = str(tmp_path / "run")
    sets = [a[len("--config."):] for a in TINY if a.startswith("--config.")]
    out = train_killed_after(15, "from lm.experiment import load_config\n"  # checkpoint: 10
                             f"config = load_config('experiments/quickstart.py', 'tiny', {sets!r})",
                             workdir, env)
    assert out.returncode == -signal.SIGKILL, out.stderr[-3000:]
    assert [r["step"] for r in workdir_files.read_metrics(workdir)] == [5, 10, 15]
    out = lm_train(TINY + [f"--workdir={workdir}"], env)  # the same command again
    assert out.returncode == 0, out.stderr[-3000:]
    steps = [r["step"] for r in workdir_files.read_metrics(workdir)]
    assert steps == [5, 10, 15, 20]
    for a, b in zip(params_of(reference), params_of(workdir)):
        np.testing.assert_array_equal(a, b)  # bitwise
    ref = workdir_files.read_metrics(reference)
    assert [r["loss"] for r in ref] == [r["loss"] for r in workdir_files.read_metrics(workdir)]


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_match_one(tmp_path, env, reference):
    """jax.distributed on localhost, CPU collectives (gloo), 4 devices per process."""
    workdir = str(tmp_path / "mp")
    e = dict(env, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    port = _free_port()
    procs = [subprocess.Popen(
        [sys.executable, "-m", "lm", "train", *TINY, f"--workdir={workdir}",
         f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={i}"],
        cwd=ROOT, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert "step 20: valid loss" in outs[0][0] and "valid loss" not in outs[1][0]
    ref, got = workdir_files.read_metrics(reference), workdir_files.read_metrics(workdir)
    assert [r["step"] for r in got] == [r["step"] for r in ref]
    np.testing.assert_allclose([r["loss"] for r in got], [r["loss"] for r in ref], rtol=1e-5)
    np.testing.assert_allclose(got[-1]["eval_loss"], ref[-1]["eval_loss"], rtol=1e-5)


def _snapshot(directory):
    out = {}
    for base, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(base, name)
            out[os.path.relpath(path, directory)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return out


def test_bad_input_is_one_clear_line_and_leaves_the_workdir_alone(tmp_path, env, reference):
    before = _snapshot(reference)
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    cases = [
        (["--config.train.stepz=5", f"--workdir={reference}"], "unknown config key 'config.train.stepz'"),
        (["--config.train.steps=abc", f"--workdir={reference}"], "--config.train.steps=abc"),
        ([f"--workdir={afile}"], "is a file, not a directory"),
        (["--config.mesh.fsdp=3", f"--workdir={reference}"], "do not divide the 8 available devices"),
        (["--config.model.d_model=64", f"--workdir={reference}"], "holds a run with model.d_model=32"),
    ]
    procs = [subprocess.Popen([sys.executable, "-m", "lm", "train", *TINY, *args], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for args, _ in cases]
    for p, (args, expected) in zip(procs, cases):
        _, err = p.communicate(timeout=300)
        assert p.returncode != 0, args
        lines = [line for line in err.strip().splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("lm train: error: "), (args, err[-2000:])
        assert expected in lines[0], (args, lines[0])
    assert _snapshot(reference) == before
    assert afile.read_text() == "not a directory"
