"""Several CPU devices on a machine whose cores are all busy: `lm train` finishes.

Before lm.devices kept one step in flight, a 2-device CPU run on a loaded 2-core machine was
killed by XLA ("Expected 2 threads to join the rendezvous, but only 1 of them arrived on time"):
the waiting shares of queued programs held every thread of XLA's CPU pool. Here XLA's collective
timeouts are cut from 40 s to 10 s, so such a starved all-reduce kills the run within the test.
"""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 40
TINY = ["--config=experiments/quickstart.py:tiny", "--config.train.sample_tokens=0",
        f"--config.train.steps={STEPS}", "--config.train.log_every=10",
        "--config.train.eval_every=20", "--config.train.eval_batches=4",
        "--config.train.checkpoint_every=0", "--noprogress"]
SHORT_COLLECTIVE_TIMEOUTS = ("--xla_cpu_collective_call_terminate_timeout_seconds=10 "
                             "--xla_cpu_collective_timeout_seconds=10")


def _busy_loops(n):
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def test_two_cpu_devices_train_to_the_end_while_every_core_is_busy(tmp_path):
    env = dict(os.environ, LM_CPU_DEVICES="2", PYTHONPATH=ROOT, XLA_FLAGS=SHORT_COLLECTIVE_TIMEOUTS)
    env.pop("LM_CRASH_AT_STEP", None)
    workdir = tmp_path / "run"
    busy = _busy_loops(os.cpu_count() or 2)  # one per core: every step waits for a core
    try:
        out = subprocess.run([sys.executable, "-m", "lm", "train", *TINY, f"--workdir={workdir}"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    finally:
        for p in busy:
            p.kill()
            p.wait()
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["step"] == STEPS
    assert len(summary["devices"]) == 2, summary["devices"]


def test_one_cpu_device_unless_asked(tmp_path):
    code = "from lm import devices; import jax; print(devices.configure_cpu_devices(), jax.device_count())"
    env = dict(os.environ, PYTHONPATH=ROOT)
    for name in ("LM_CPU_DEVICES", "XLA_FLAGS"):
        env.pop(name, None)
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.stdout.split() == ["1", "1"], run.stderr[-2000:]
    run = subprocess.run([sys.executable, "-c", code], env=dict(env, LM_CPU_DEVICES="3"),
                         capture_output=True, text=True, timeout=120)
    assert run.stdout.split() == ["3", "3"], run.stderr[-2000:]


def test_a_bad_lm_cpu_devices_is_one_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, LM_CPU_DEVICES="abc")
    run = subprocess.run([sys.executable, "-m", "lm", "train", "--workdir", str(tmp_path)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip() == ("lm train: error: LM_CPU_DEVICES='abc' is not a whole number of "
                                  "devices (>= 1); unset it for one CPU device or set e.g. "
                                  "LM_CPU_DEVICES=2")
