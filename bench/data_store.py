"""Token store benchmark: build throughput, peak memory, loader speed, time to the first batch.

    nice -n 5 python -m bench.data_store --sizes_mb=100,1000 --tokenizers=byte,sentencepiece

For each corpus size (generated text files under --root, kept between runs) and tokenizer,
each phase runs in a fresh subprocess so its peak RSS is its own:

- build: `build_dataset` from nothing (sentencepiece: sample + train + tokenize), MB/s of text;
- first batch: `build_dataset` on the finished store + `next(train_iterator)`, seconds (after
  imports; the import time of lm.data is reported separately);
- iterate: quickstart-shaped batches (16 x 128) for --iterate_s seconds, tokens/s;
- train: a whole `lm train` (quickstart model, --train_steps steps on the finished store, with
  its end-of-run baselines), peak RSS of that process (ru_maxrss of a wrapper's only child) and
  wall time: what a user's run costs, not only the reader's share (--train_steps=0 skips it).

Peak RSS is VmHWM (it counts the memmapped pages a process touched, which the kernel can drop
at any time); the peak of RssAnon (sampled every 20 ms), memory that cannot be dropped, beside it.
--trainer_tokens_per_s: the quickstart trainer's consumption to compare the loader with
(0 = measure it with bench.throughput on this machine). Results: one JSON line per run in
bench/results/data_store.jsonl.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("root", "/tmp/lm_bench_store", "where corpora and stores go")
flags.DEFINE_list("sizes_mb", ["100"], "corpus sizes in MB of text")
flags.DEFINE_list("tokenizers", ["byte"], "byte | char | sentencepiece")
flags.DEFINE_integer("vocab_size", 8192, "sentencepiece vocabulary")
flags.DEFINE_float("iterate_s", 10.0, "seconds of batch iteration")
flags.DEFINE_float("trainer_tokens_per_s", 0.0, "the trainer's consumption (0: measure it)")
flags.DEFINE_string("results_dir", "bench/results", "'' writes nothing")
flags.DEFINE_bool("keep", False, "keep the stores (corpora are always kept)")
flags.DEFINE_integer("train_steps", 3, "steps of the whole-`lm train` phase (0: skip it)")

FILE_MB = 64


def generate(folder: str, size_mb: int) -> int:
    """Text files of FILE_MB MB each: lines drawn from a pool of 200k lines of Zipf-distributed
    pseudo-words (so sentencepiece has words to merge, and files differ)."""
    import numpy as np

    os.makedirs(folder, exist_ok=True)
    done = os.path.join(folder, ".complete")
    if os.path.exists(done):
        return sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder) if f.endswith(".txt"))
    rng = np.random.default_rng(0)
    letters = np.array(list("etaoinshrdlcumwfgypbvkjxqz"))
    vocab = ["".join(rng.choice(letters, size=int(n), p=np.linspace(2, 0.1, 26) / np.linspace(2, 0.1, 26).sum()))
             for n in rng.integers(1, 11, size=20_000)]
    p = 1.0 / np.arange(1, len(vocab) + 1)
    words = np.array(vocab)[rng.choice(len(vocab), size=2_000_000, p=p / p.sum())]
    cuts = np.cumsum(rng.integers(3, 25, size=200_000))
    pool = np.array([" ".join(words[a:b]).capitalize() + "." for a, b in zip(np.r_[0, cuts[:-1]], cuts)
                     if b <= len(words)], dtype=object)
    total, i = 0, 0
    while total < size_mb * 1e6:
        idx = np.random.default_rng(i + 1).integers(0, len(pool), size=FILE_MB * 1_000_000 // 60)
        text = "\n".join(pool[idx])[: min(FILE_MB * 1_000_000, int(size_mb * 1e6 - total))] + "\n"
        with open(os.path.join(folder, f"part{i:04d}.txt"), "w") as f:
            f.write(text)
        total += len(text)
        i += 1
    open(done, "w").close()
    return total


PHASE = r"""
import json, logging, os, sys, threading, time
t0 = time.time()
from lm.data import build_dataset, data_config
t_import = time.time() - t0
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
phase, corpus, store, kind, vocab, seconds = sys.argv[1:7]
cfg = data_config(source="files", path=corpus, store_dir=store, tokenizer=kind, vocab_size=int(vocab))

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024

peak_anon = [0.0]
def sample():  # RssAnon has no high-water mark: sample it
    while True:
        peak_anon[0] = max(peak_anon[0], status("RssAnon"))
        time.sleep(0.02)
threading.Thread(target=sample, daemon=True).start()

def rss():  # VmHWM: this process's peak (ru_maxrss would include the parent's, from before exec)
    return {"peak_rss_mb": status("VmHWM"), "peak_rss_anon_mb": peak_anon[0], "rss_file_mb": status("RssFile")}

t = time.time()
ds = build_dataset(cfg, 128)
out = {"phase": phase, "import_s": t_import, "build_dataset_s": time.time() - t}
it = ds.train_iterator(16, seed=0)
next(it)
out["first_batch_s"] = time.time() - t
if phase == "iterate":
    n, t = 0, time.time()
    while time.time() - t < float(seconds):
        for _ in range(50):
            next(it)
        n += 50
    out.update(batches=n, tokens_per_s=n * 16 * 128 / (time.time() - t))
out.update(rss(), train_tokens=int(ds.stream("train").num_tokens), vocab_size=ds.vocab_size)
print(json.dumps(out))
"""


def phase(name, corpus, store, kind, vocab, seconds) -> dict:
    proc = subprocess.run([sys.executable, "-c", PHASE, name, corpus, store, kind, str(vocab), str(seconds)],
                          capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"phase {name} failed: {proc.stderr[-2000:]}")
    progress = [line for line in proc.stderr.splitlines() if line.startswith("token store")]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["log_tail"] = progress[-3:]
    return out


# A wrapper whose only child is `lm train`: its RUSAGE_CHILDREN peak is that run's peak RSS.
TRAIN = r"""
import json, resource, subprocess, sys, time
t = time.time()
proc = subprocess.run([sys.executable, "-m", "lm", "train", *sys.argv[1:]], capture_output=True, text=True)
print(json.dumps({"rc": proc.returncode, "seconds": time.time() - t, "stderr": proc.stderr[-1500:],
                  "stdout": proc.stdout[-1500:],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def train_phase(corpus, store, kind, vocab, steps) -> dict:
    """Peak RSS and wall time of a whole `lm train` on the corpus (the store already built)."""
    import tempfile

    with tempfile.TemporaryDirectory(dir=FLAGS.root) as work:
        args = ["--config=experiments/quickstart.py", "--config.data.source=files",
                f"--config.data.path={corpus}", f"--config.data.store_dir={store}",
                f"--config.data.tokenizer={kind}", f"--config.data.vocab_size={vocab if kind == 'sentencepiece' else 0}",
                f"--config.data.data_dir={FLAGS.root}", f"--config.train.steps={steps}",
                f"--config.train.eval_every={steps}", "--config.train.eval_batches=2",
                "--config.train.sample_tokens=0", "--noprogress", f"--workdir={work}"]
        proc = subprocess.run([sys.executable, "-c", TRAIN, *args], capture_output=True, text=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if out["rc"]:
        raise RuntimeError(f"lm train failed: {out['stderr']}")
    beside = [line for line in out["stdout"].splitlines() if "baselines on the same split" in line]
    return {"train_peak_rss_mb": out["peak_rss_mb"], "train_s": out["seconds"],
            "train_baselines_line": beside[-1] if beside else None}


def trainer_tokens_per_s() -> float:
    from bench import throughput
    from experiments import quickstart

    res, _ = throughput.measure(quickstart.get_config(), steps=20)
    return float(res["tokens_per_s"])


def main(argv):
    del argv
    from bench import harness

    consumed = FLAGS.trainer_tokens_per_s or trainer_tokens_per_s()
    print(f"quickstart trainer consumes {consumed:,.0f} tokens/s on this machine")
    for size in (int(s) for s in FLAGS.sizes_mb):
        corpus = os.path.join(FLAGS.root, f"corpus_{size}MB")
        t = time.time()
        nbytes = generate(corpus, size)
        print(f"corpus {corpus}: {nbytes / 1e6:.0f} MB ({time.time() - t:.0f} s to generate or find)")
        for kind in FLAGS.tokenizers:
            store = os.path.join(FLAGS.root, f"store_{size}MB_{kind}")
            shutil.rmtree(store, ignore_errors=True)
            t = time.time()
            build = phase("build", corpus, store, kind, FLAGS.vocab_size, 0)
            build_s = time.time() - t
            first = phase("first_batch", corpus, store, kind, FLAGS.vocab_size, 0)
            loop = phase("iterate", corpus, store, kind, FLAGS.vocab_size, FLAGS.iterate_s)
            res = {"corpus_mb": nbytes / 1e6, "tokenizer": kind, "vocab_size": build["vocab_size"],
                   "train_tokens": build["train_tokens"], "build_s": build_s,
                   "build_mb_per_s": nbytes / 1e6 / build_s, "build_peak_rss_mb": build["peak_rss_mb"],
                   "build_peak_rss_anon_mb": build["peak_rss_anon_mb"], "import_s": first["import_s"],
                   "first_batch_s": first["first_batch_s"], "iterate_peak_rss_mb": loop["peak_rss_mb"],
                   "iterate_peak_rss_anon_mb": loop["peak_rss_anon_mb"], "loader_tokens_per_s": loop["tokens_per_s"],
                   "trainer_tokens_per_s": consumed, "loader_over_trainer": loop["tokens_per_s"] / consumed,
                   "build_log": build["log_tail"]}
            if FLAGS.train_steps:
                res.update(train_phase(corpus, store, kind, FLAGS.vocab_size, FLAGS.train_steps))
            print(json.dumps(res))
            if FLAGS.results_dir:
                rec = harness.record("data_store", res)
                harness.append_result(rec, FLAGS.results_dir, label="data_store")
            if not FLAGS.keep:
                shutil.rmtree(store, ignore_errors=True)


if __name__ == "__main__":
    app.run(main)
