"""Baselines bounded in memory whatever the corpus size: computed on a stated context (the end of
train before the held-out split, the start of held-out), keyed by the token store's checksums."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from lm import baselines
from lm.data import build_dataset, data_config, store
from lm.experiment import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _corpus(path, nbytes: int, seed: int = 0) -> None:
    """Lines of words from a small Zipf vocabulary: text with n-gram structure to model."""
    rng = np.random.default_rng(seed)
    words = np.array(["the", "a", "of", "model", "token", "data", "bits", "byte", "store", "run",
                      "train", "valid", "corpus", "cap", "memory", "lzma", "gram", "order"])
    p = 1.0 / np.arange(1, len(words) + 1)
    with open(path, "w") as f:
        written = 0
        while written < nbytes:
            line = " ".join(words[rng.choice(len(words), size=200_000, p=p / p.sum())]) + "\n"
            f.write(line[: nbytes - written])
            written += len(line[: nbytes - written])


def _config(corpus, data_dir):
    c = load_config(os.path.join(ROOT, "experiments/quickstart.py"), "tiny")
    c.data.update(source="files", path=str(corpus), tokenizer="byte", data_dir=str(data_dir))
    return c


CHILD = r"""
import json, resource, sys
from lm import baselines
from lm.data import build_dataset
from lm.experiment import load_config
corpus, data_dir, cap = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = load_config("experiments/quickstart.py", "tiny")
c.data.update(source="files", path=corpus, tokenizer="byte", data_dir=data_dir)
ds = build_dataset(c.data, int(c.model.max_len))  # the store is built: this only opens it
import jax; jax.process_count()  # a trainer has jax started before the baselines
baselines.compressor_table(b"warm up" * 99, b"up")  # bz2 -9's fixed 7.6 MB: not the corpus's
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
baselines.TRAIN_CONTEXT_BYTES, baselines.HELDOUT_BYTES = cap, cap // 4  # the test-lowered cap
out = baselines.for_run(c, None, dataset=ds)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"grew_kb": peak - before, "record": out}))
"""


def test_peak_memory_stays_flat_on_a_corpus_far_above_the_cap(tmp_path):
    """A 16 MB corpus, caps of 32 KiB train / 8 KiB held-out: the baselines add a few MB of peak
    RSS, not the whole-corpus baselines' 100 bytes per corpus byte (1.6 GB here)."""
    corpus, size, cap = tmp_path / "big.txt", 16_000_000, 32 << 10
    _corpus(corpus, size)
    build_dataset(_config(corpus, tmp_path / "data").data, 64)  # build the store here, once
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-c", CHILD, str(corpus), str(tmp_path / "data"), str(cap)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    ctx = out["record"]["context"]
    assert ctx == {"train_bytes": cap, "heldout_bytes": cap // 4, "capped": True,
                   "train_cap_bytes": cap, "heldout_cap_bytes": cap // 4}
    assert out["record"]["bits_per_byte"]["lzma"] > 0
    print("baselines grew peak RSS by", out["grew_kb"], "KB")
    assert out["grew_kb"] * 1024 < size, out  # flat: below the corpus size, whatever it is


def test_context_is_the_end_of_train_and_start_of_heldout_and_a_hit_reads_no_token(tmp_path, monkeypatch):
    corpus = tmp_path / "c.txt"
    _corpus(corpus, 300_000)
    config = _config(corpus, tmp_path / "data")
    ds = build_dataset(config.data, 64)
    text = corpus.read_bytes()
    cut = int(len(text) * 0.9)  # data.source=files: the last 10% is valid
    result = baselines.cached_baselines(config, dataset=ds, train_bytes=5000, heldout_bytes=2000)
    assert result["context"]["capped"] and result["context"]["train_split_tokens"] == cut
    assert (result["train_tokens"], result["heldout_tokens"]) == (5000, 2000)
    by_hand = baselines.compressor_table(text[cut - 5000:cut], text[cut:cut + 2000])
    assert [r["bits_per_byte"] for r in result["compressors"]] == [r["bits_per_byte"] for r in by_hand]
    kn = baselines.ngram_table(np.frombuffer(text[cut - 5000:cut], np.uint8),
                               np.frombuffer(text[cut:cut + 2000], np.uint8), 256)
    assert [r["bits_per_byte"] for r in result["ngram"]] == pytest.approx([r["bits_per_byte"] for r in kn])
    assert "computed on the last 5000 bytes of train" in baselines.format_table(result)
    # a cache hit is found from the store's manifest alone: no token is read
    monkeypatch.setattr(store.StoredSplit, "span", lambda *a: pytest.fail("read tokens on a hit"))
    assert baselines.cached_baselines(config, dataset=ds, train_bytes=5000, heldout_bytes=2000) == result
    # other bounds are another entry
    monkeypatch.undo()
    other = baselines.cached_baselines(config, dataset=ds, train_bytes=4000, heldout_bytes=2000)
    assert other["train_tokens"] == 4000 and len(os.listdir(tmp_path / "data" / "baselines")) == 2


def test_uncapped_when_the_corpus_fits(tmp_path):
    config = _config(tmp_path / "c.txt", tmp_path / "data")
    _corpus(tmp_path / "c.txt", 20_000)
    rec = baselines.for_run(config, None, dataset=build_dataset(config.data, 64))
    assert rec["context"]["capped"] is False and rec["context"]["heldout_bytes"] == 2000
    line = baselines.beside_line(3.0, rec)
    assert "capped" not in line and "lzma|train" in line


def test_a_mixture_context_takes_an_equal_share_of_each_component(tmp_path):
    for name, line in (("a", "hello world\n"), ("b", "other text here\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.txt").write_text(line * 3000)
    cfg = data_config(source="files", mixture=f"{tmp_path / 'a'}@0.5;{tmp_path / 'b'}@0.5",
                      tokenizer="byte", data_dir=str(tmp_path / "data"))
    ds = build_dataset(cfg, 16)
    r = baselines.dataset_baselines(ds, range(0, 3), "valid", train_bytes=20000, heldout_bytes=3000)
    assert r["context"]["capped"] and (r["train_tokens"], r["heldout_tokens"]) == (20000, 3000)
    # both components' text is in the train context, so the held-out text of each is predictable
    assert baselines.best_ngram(r)["bits_per_byte"] < 0.5
