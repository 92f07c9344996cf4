"""Compile time of the train step against depth, with and without scanning over layers.

    python -m bench.compile_time [--config=bench/configs/nanogpt.py:baby] [--depths=2,4,8,16,32]
        [--results_dir=bench/results] [--plot=bench/results/compile_time_cpu.png]

An unrolled stack gives XLA L copies of the layer to optimise, so compile time grows with
depth; `model.scan_layers` compiles one layer inside a loop, so it should stay about flat.
Only tracing/lowering and XLA compilation are timed (against the abstract train state: nothing
is initialised or run). One JSON line per (depth, scan) point, and a PNG plot.
"""

from __future__ import annotations

import copy
import json
import time

from absl import app, flags
from ml_collections import config_flags

from bench import harness, hardware


def define_flags():
    """Command-line flags (defined only when run as a program, so modules import cleanly)."""
    global _CONFIG, _DEPTHS, _RESULTS, _PLOT
    _CONFIG = config_flags.DEFINE_config_file("config", "bench/configs/nanogpt.py:baby",
                                              "Base config file[:arg]; num_layers is varied.")
    _DEPTHS = flags.DEFINE_list("depths", ["2", "4", "8", "16", "32"], "Layer counts to compile.")
    _RESULTS = flags.DEFINE_string("results_dir", "bench/results", "Where <device>.jsonl goes ('' = don't write).")
    _PLOT = flags.DEFINE_string("plot", "", "PNG path (default results_dir/compile_time_<device>.png; "
                                "'' with no results_dir = no plot).")


def compile_times(config, depth: int, scan: bool) -> dict:
    """Trace+lower and compile seconds of the train step at this depth."""
    from lm import runs, sharding, trainer
    config = copy.deepcopy(config)
    with config.unlocked():
        config.model.num_layers = depth
        config.model.scan_layers = scan
    run = runs.setup(config)
    step = trainer.make_train_step(run)
    batch = harness.synthetic_batches(run, 1)[0]
    with sharding.activate(run.mesh):
        t0 = time.perf_counter()
        lowered = step.lower(run.abstract_state, batch)
        t1 = time.perf_counter()
        lowered.compile()
        t2 = time.perf_counter()
    return {"num_layers": depth, "scan_layers": scan, "trace_lower_s": round(t1 - t0, 3),
            "compile_s": round(t2 - t1, 3), "total_s": round(t2 - t0, 3)}


def plot(points: list[dict], path: str, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for scan, style in ((False, "o-"), (True, "s-")):
        pts = sorted((p["num_layers"], p["total_s"]) for p in points if p["scan_layers"] == scan)
        if pts:
            ax.plot(*zip(*pts), style, label="nn.scan over layers" if scan else "unrolled loop")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("layers")
    ax.set_ylabel("trace + compile time (s)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    try:
        depths = [int(d) for d in _DEPTHS.value]
    except ValueError:
        raise app.UsageError(f"--depths must be integers, got {_DEPTHS.value}")
    points = []
    for depth in depths:
        for scan in (False, True):
            p = compile_times(config, depth, scan)
            print(json.dumps(p), flush=True)
            points.append(p)
            if _RESULTS.value:
                m = config.model
                rec = harness.record("compile_time", p, config=config, extra={
                    "note": f"d_model={m.d_model} heads={m.num_heads} T={m.max_len} dtype={m.dtype}"})
                harness.append_result(rec, _RESULTS.value)
    path = _PLOT.value or (f"{_RESULTS.value}/compile_time_{hardware.device_label()}.png"
                           if _RESULTS.value else "")
    if path:
        m = config.model
        plot(points, path, f"train-step compile time, {hardware.device_label()} "
             f"(d={m.d_model}, T={m.max_len}, {m.dtype})")
        print("plot:", path)


if __name__ == "__main__":
    define_flags()
    app.run(main)
