"""The measuring core shared by the benchmark commands: the trainer's own jitted train step,
fed synthetic token batches, timed step by step; results appended as JSON lines.

The step is `lm.trainer.make_train_step(run)` (forward, backward, clipping, AdamW, donated
state), so the numbers are those of `lm train` minus data loading. Batches are built once,
put on the devices before timing, and cycled: input cost is out of the measurement.

FLOPs convention: model FLOPs per token from `lm.models.flops_per_token`, i.e.
6 N (non-embedding parameters) + 12 L T d (attention scores and values) + 6 d V (unembedding),
forward + backward, no rematerialisation counted (so this is MFU, not hardware FLOP
utilisation).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from bench import hardware

FLOPS_CONVENTION = ("model FLOPs/token = 6*N_nonembedding + 12*L*T*d + 6*d*V "
                    "(lm.models.flops_per_token; fwd+bwd, remat not counted)")


@dataclasses.dataclass
class Bench:
    """A ready-to-time train step: the trainer's Run, its state and device-resident batches."""

    run: object  # lm.runs.Run
    state: dict
    step: object  # the jitted train step (state, batch) -> (state, metrics)
    batches: list
    num_params: int
    flops_per_token: float

    @property
    def tokens_per_step(self) -> int:
        return int(self.run.config.train.batch_size) * int(self.run.seq_len)


def synthetic_batches(run, count: int = 2, seed: int = 0) -> list[dict]:
    """`count` global batches of uniform random tokens, already on the devices."""
    from lm import sharding
    b, t, v = int(run.config.train.batch_size), int(run.seq_len), int(run.model_cfg.vocab_size)
    rows = b // sharding.process_rows(run.mesh)[1]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        seq = rng.integers(0, v, (rows, t + 1), dtype=np.int32)
        local = {"inputs": seq[:, :-1], "targets": seq[:, 1:],
                 "weights": np.ones((rows, t), np.float32),
                 "segment_ids": np.ones((rows, t), np.int32)}
        out.append(sharding.global_batch(local, run.mesh))
    return out


def prepare(config, *, num_batches: int = 2) -> Bench:
    """Build the trainer's run, fresh state, jitted step and synthetic batches for `config`."""
    from lm import models, runs, trainer
    run = runs.setup(config)
    state = runs.init_state(run)
    step = trainer.make_train_step(run)
    return Bench(run, state, step, synthetic_batches(run, num_batches),
                 models.count_params(run.model_cfg), float(models.flops_per_token(run.model_cfg)))


def compile_step(bench: Bench) -> tuple[object, float, float]:
    """(compiled step, trace+lower seconds, XLA compile seconds), ahead of time."""
    from lm import sharding
    with sharding.activate(bench.run.mesh):
        t0 = time.perf_counter()
        lowered = bench.step.lower(bench.state, bench.batches[0])
        t1 = time.perf_counter()
        compiled = lowered.compile()
        t2 = time.perf_counter()
    return compiled, t1 - t0, t2 - t1


def time_steps(fn, state, batches, steps: int, *, sync_every_step: bool = True):
    """Run `steps` steps; returns (state, per-step seconds). Each step is waited for, so the
    times are true step latencies (XLA dispatch is asynchronous otherwise)."""
    times = []
    metrics = None
    for i in range(steps):
        t0 = time.perf_counter()
        state, metrics = fn(state, batches[i % len(batches)])
        if sync_every_step:
            jax.block_until_ready(metrics["loss"])
        times.append(time.perf_counter() - t0)
    if metrics is not None:
        jax.block_until_ready(metrics["loss"])
    return state, times


def run_pipelined(fn, state, batches, steps: int):
    """Run `steps` steps without waiting in between; returns (state, seconds per step)."""
    t0 = time.perf_counter()
    metrics = None
    for i in range(steps):
        state, metrics = fn(state, batches[i % len(batches)])
    jax.block_until_ready(metrics["loss"])
    return state, (time.perf_counter() - t0) / max(steps, 1)


def step_stats(times, tokens_per_step: int, flops_per_token: float, peak: float) -> dict:
    """Median/p10/p90 step time and what follows from the median: tokens/s, FLOP/s, MFU."""
    t = np.asarray(times, np.float64)
    med = float(np.median(t))
    flops = flops_per_token * tokens_per_step / med
    return {
        "steps_timed": int(t.size),
        "step_ms_median": round(med * 1e3, 3),
        "step_ms_p10": round(float(np.percentile(t, 10)) * 1e3, 3),
        "step_ms_p90": round(float(np.percentile(t, 90)) * 1e3, 3),
        "step_ms_min": round(float(t.min()) * 1e3, 3),
        "tokens_per_s": round(tokens_per_step / med, 1),
        "tokens_per_s_best": round(tokens_per_step / float(t.min()), 1),
        "model_flops_per_s": flops,
        "mfu": flops / peak if peak and np.isfinite(peak) else None,
    }


def state_bytes_per_device(state) -> dict:
    """Bytes of params and optimizer state held by each device (from the addressable shards)."""
    per = {}
    for leaf in jax.tree.leaves({"params": state["params"], "opt_state": state["opt_state"]}):
        for shard in getattr(leaf, "addressable_shards", []):
            key = str(shard.device)
            per[key] = per.get(key, 0) + shard.data.nbytes
    return per


def config_summary(config, bench: Bench | None = None) -> dict:
    """The numbers that identify a benchmarked model and batch."""
    from lm.config import config_hash
    m, t = config.model, config.train
    out = {
        "name": config.experiment.name, "rung": config.experiment.rung,
        "hash": config_hash(config),
        "model": {k: m[k] for k in ("kind", "num_layers", "num_heads", "num_kv_heads", "d_model",
                                     "d_ff", "max_len", "vocab_size", "mlp", "norm", "position",
                                     "kernel", "use_bias", "dropout", "dtype", "scan_layers",
                                     "remat", "tie_embeddings")},
        "batch_size": t.batch_size, "grad_accum": t.grad_accum,
        "mesh": dict(config.mesh),
    }
    if bench is not None:
        out["model"]["vocab_size"] = int(bench.run.model_cfg.vocab_size)
        out["seq_len"] = int(bench.run.seq_len)
        out["tokens_per_step"] = bench.tokens_per_step
        out["num_params"] = bench.num_params
        out["flops_per_token"] = bench.flops_per_token
    return out


def record(benchmark: str, results: dict, *, config=None, bench: Bench | None = None,
           extra: dict | None = None) -> dict:
    """One JSON-able result line: what ran, where, with which versions, and the numbers."""
    rec = {
        "benchmark": benchmark,
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git": hardware.git_revision(),
        "machine": hardware.machine(),
        "versions": hardware.versions(),
    }
    if config is not None:
        rec["config"] = config_summary(config, bench)
    rec.update(extra or {})
    rec["results"] = results
    return rec


def append_result(rec: dict, results_dir: str, label: str | None = None) -> str:
    """Append `rec` as one line to results_dir/<device label>.jsonl; returns the path."""
    os.makedirs(results_dir, exist_ok=True)
    path = os.path.join(results_dir, f"{label or hardware.device_label()}.jsonl")
    line = json.dumps(rec, sort_keys=False, default=_json_default)
    with open(path, "a") as f:  # one write of one line: concurrent appends stay whole lines
        f.write(line + "\n")
    return path


def publish(rec: dict, summary: str, results_dir: str) -> None:
    """Print the record and a one-line summary; append the record unless results_dir is ''."""
    print(json.dumps(rec["results"], indent=1, default=_json_default))
    print(f"\n{summary}  (load {rec['machine']['load_avg_1m']})")
    if results_dir:
        print("appended to", append_result(rec, results_dir))


def _json_default(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, (jnp.ndarray, np.ndarray)):
        return np.asarray(x).tolist()
    return str(x)
