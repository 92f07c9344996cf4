"""`lm eval` and `lm sample` on small workdirs, and their one-line errors for bad input.

The workdirs are made the way `lm train` makes them (runs.setup saves the tokenizer, config.json,
an Orbax checkpoint) but with random weights drawn in numpy, so no training step is compiled.
"""

import json
import math
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from lm import runs
from lm.checkpoint import Checkpoints
from lm.config import base_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAKESPEARE = os.path.join(REPO, "..", "shared", "data", "tinyshakespeare", "input.txt")


def make_workdir(path, kind, cache):
    if not os.path.exists(SHAKESPEARE):
        pytest.skip(f"tiny Shakespeare not found at {SHAKESPEARE}")
    c = base_config()
    c.data.update(source="tinyshakespeare", tokenizer="char", path=SHAKESPEARE, data_dir=str(cache))
    c.model.update(kind=kind, max_len=16, d_model=16, num_layers=1, num_heads=2)
    c.train.update(batch_size=8, objective="next_token" if kind == "decoder" else "prefix_lm")
    run = runs.setup(c, str(path))
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(run.config.to_dict(), f, default=str)
    rng = np.random.default_rng(0)
    state = jax.tree.map(lambda s: jax.device_put(rng.normal(0, 0.3, s.shape).astype(s.dtype), s.sharding),
                         run.abstract_state)
    ckpts = Checkpoints(str(path), async_save=False)
    ckpts.save(3, state, {})
    ckpts.close()
    return str(path)


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("workdirs")
    # Encoder-decoder sampling is checked in test_sampling.py; one kind keeps these subprocesses few.
    return {"decoder": make_workdir(root / "decoder", "decoder", root / "cache")}


def lm(*args):
    return subprocess.run([sys.executable, "-m", "lm", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def test_eval_prints_metrics(workdirs):
    out = lm("eval", f"--workdir={workdirs['decoder']}", "--max_batches=2")
    assert out.returncode == 0, out.stderr
    metrics = json.loads(out.stdout.strip().splitlines()[-1])
    assert metrics["checkpoint"] == 3 and metrics["split"] == "valid"
    assert metrics["tokens"] == metrics["bytes"] > 0  # ASCII text, char tokens
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["loss"]), rel=1e-6)
    assert metrics["bits_per_byte"] == pytest.approx(metrics["loss"] / math.log(2), rel=1e-6)
    assert 1.0 < metrics["loss"] < 30.0


def test_sample_continues_the_prompt(workdirs):
    out = lm("sample", f"--workdir={workdirs['decoder']}", "--prompt=ROMEO:", "--max_new_tokens=8",
             "--temperature=0")
    assert out.returncode == 0, out.stderr
    text = out.stdout[:-1]  # print's newline
    assert text.startswith("ROMEO:") and len(text) == len("ROMEO:") + 8, repr(text)
    assert "max_new_tokens" in out.stderr and "checkpoint step 3" in out.stderr


@pytest.mark.parametrize("case", ["no checkpoint", "char outside vocab", "negative tokens"])
def test_sample_bad_input(workdirs, tmp_path, case):
    workdir = workdirs["decoder"]
    args = ["--prompt=To be"]
    if case == "no checkpoint":
        workdir = str(tmp_path / "fresh")
        shutil.copytree(workdirs["decoder"], workdir, ignore=shutil.ignore_patterns("checkpoints"))
        expect = "no checkpoint"
    elif case == "char outside vocab":
        args = ["--prompt=naïve ☃"]
        expect = "not in the vocabulary"
    else:
        args.append("--max_new_tokens=-3")  # (past the context is fine: the window slides)
        expect = "max_new_tokens must be a non-negative integer"
    out = lm("sample", f"--workdir={workdir}", *args)
    assert out.returncode != 0 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lm sample: error: ") and expect in lines[0], out.stderr


def test_eval_refuses_negative_max_batches_and_stray_table(workdirs):
    out = lm("eval", f"--workdir={workdirs['decoder']}", "--max_batches=-1")
    assert out.returncode != 0 and "--max_batches=-1: must be >= 0" in out.stderr
    assert "Traceback" not in out.stderr
    out = lm("eval", f"--workdir={workdirs['decoder']}", "--table")
    assert out.returncode != 0 and "go with --harness_tasks" in out.stderr
