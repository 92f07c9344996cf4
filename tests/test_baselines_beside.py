"""Baselines beside results: cached per dataset + split, printed by `lm train`, equal to
`lm baselines` on the same split."""

import json
import os
import re
import subprocess
import sys

import pytest

from lm import baselines
from lm.experiment import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETS = ["--config.data.source=markov", "--config.data.train_tokens=6000",
        "--config.data.eval_tokens=1500", "--config.data.markov_vocab=16"]


def _config(data_dir):
    c = load_config(os.path.join(ROOT, "experiments/quickstart.py"), "tiny")
    c.data.update(source="markov", train_tokens=6000, eval_tokens=1500, markov_vocab=16,
                  data_dir=str(data_dir))
    return c


def test_cached_baselines_compute_once_and_equal_run_baselines(tmp_path, monkeypatch):
    config = _config(tmp_path)
    first = baselines.cached_baselines(config)
    direct = baselines.run_baselines(config)  # what `lm baselines` computes
    assert [r["bits_per_byte"] for r in first["ngram"]] == [r["bits_per_byte"] for r in direct["ngram"]]
    assert first["compressors"][0]["bits_per_byte"] == direct["compressors"][0]["bits_per_byte"]
    files = os.listdir(tmp_path / "baselines")
    assert len(files) == 1 and files[0].startswith("markov-valid-")
    monkeypatch.setattr(baselines, "dataset_baselines", lambda *a, **k: pytest.fail("not cached"))
    assert baselines.cached_baselines(config) == first
    rec = baselines.record_baselines(first)
    best = min(r["bits_per_byte"] for r in direct["ngram"])
    assert rec["split"] == "valid" and best in rec["bits_per_byte"].values()
    assert {"gzip", "bz2", "lzma", "lzma_alone"} <= set(rec["bits_per_byte"])
    # another dataset (a different seed of the source) is another cache entry
    config.data.markov_seed = 1
    monkeypatch.undo()
    baselines.cached_baselines(config)
    assert len(os.listdir(tmp_path / "baselines")) == 2


def test_lm_train_prints_the_baselines_of_lm_baselines(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, LM_DATA_DIR=str(tmp_path / "data"))
    common = ["--config=experiments/quickstart.py:tiny", *SETS]
    train = subprocess.run(
        [sys.executable, "-m", "lm", "train", *common, "--config.train.steps=2",
         "--config.train.eval_every=2", "--config.train.sample_tokens=0", "--noprogress",
         f"--workdir={tmp_path / 'run'}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert train.returncode == 0, train.stderr[-2000:]
    line = next(l for l in train.stdout.splitlines() if "baselines on the same split" in l)
    printed = dict((k, float(v)) for k, v in re.findall(r"([\w|]+(?: alone)?) (\d+\.\d+)(?=,| \()", line))
    out = tmp_path / "b.json"
    ref = subprocess.run([sys.executable, "-m", "lm", "baselines", *common, f"--out={out}"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert ref.returncode == 0, ref.stderr[-2000:]
    result = json.loads(out.read_text())
    short = {"zlib-9": "gzip", "bz2-9": "bz2", "lzma-9e": "lzma"}
    want = {f"kn{baselines.best_ngram(result)['order']}": baselines.best_ngram(result)["bits_per_byte"]}
    for r in result["compressors"]:
        want[short[r["compressor"]] + "|train"] = r["bits_per_byte"]
        want[short[r["compressor"]] + " alone"] = r["unconditional_bits_per_byte"]
    assert printed.keys() == want.keys()
    for k, v in want.items():
        assert printed[k] == pytest.approx(v, abs=5e-4), k
