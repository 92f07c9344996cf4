"""Throughput of the trainer's jitted train step: step time, tokens/s, model FLOP/s, MFU.

    python -m bench.throughput --config=bench/configs/nanogpt.py:baby [--config.train.batch_size=24]
        [--steps=50] [--warmup=5] [--results_dir=bench/results] [--profile_dir=/tmp/trace]

Compiles the step ahead of time (trace/lower and XLA compile times are reported apart), runs
`warmup` steps, then times `steps` steps one by one (each waited for): median, p10 and p90
step time, tokens/s and FLOP/s from the median, MFU against the device peak for the model's
compute dtype (bench.hardware), peak memory per device. Appends one JSON line to
results_dir/<device kind>.jsonl and prints it.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":  # must run before JAX is imported
    from bench import force_host_devices
    force_host_devices(sys.argv)

import time

from absl import app, flags
from ml_collections import config_flags

from bench import harness, hardware


def define_flags():
    """Command-line flags (defined only when run as a program, so modules import cleanly)."""
    flags.DEFINE_integer("host_devices", 0, "Split the CPU into this many host devices "
                         "(read before JAX starts; the mesh's data axis then spans them).")
    global _CONFIG, _STEPS, _WARMUP, _RESULTS, _NOTE, _PROFILE
    _CONFIG = config_flags.DEFINE_config_file("config", None, "Config file[:arg], e.g. "
                                              "bench/configs/nanogpt.py:baby", lock_config=True)
    _STEPS = flags.DEFINE_integer("steps", 30, "Timed steps.")
    _WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps after compilation.")
    _RESULTS = flags.DEFINE_string("results_dir", "bench/results", "Where <device>.jsonl goes ('' = don't write).")
    _NOTE = flags.DEFINE_string("note", "", "Free text stored with the result (what was varied).")
    _PROFILE = flags.DEFINE_string("profile_dir", "", "If set, a jax.profiler trace of 5 more steps goes here.")


def measure(config, *, steps: int = 30, warmup: int = 3, profile_dir: str = "") -> tuple[dict, "harness.Bench"]:
    """Compile, warm up and time the train step of `config`; returns (results, bench)."""
    import jax
    bench = harness.prepare(config)
    compiled, lower_s, compile_s = harness.compile_step(bench)
    state, warm_times = harness.time_steps(compiled, bench.state, bench.batches, max(warmup, 1))
    cpu0 = time.process_time()
    state, times = harness.time_steps(compiled, state, bench.batches, steps)
    cpu_per_step = (time.process_time() - cpu0) / max(steps, 1)
    state, pipelined = harness.run_pipelined(compiled, state, bench.batches, steps)
    if profile_dir:
        jax.profiler.start_trace(profile_dir)
        state, _ = harness.time_steps(compiled, state, bench.batches, 5)
        jax.profiler.stop_trace()
    from lm.precision import resolve_dtype
    dtype = resolve_dtype(bench.run.model_cfg.dtype)  # 'auto': what this platform computes in
    peak, peak_source = hardware.device_peak(jax.devices()[0], dtype)
    n_dev = len(bench.run.mesh.devices.flat)
    if jax.devices()[0].platform == "cpu":
        per_device_peak = peak  # host devices share the CPU: MFU is against the whole CPU
    else:
        per_device_peak = peak * n_dev
    res = harness.step_stats(times, bench.tokens_per_step, bench.flops_per_token, per_device_peak)
    mem, mem_source = hardware.peak_memory(bench.run.mesh.devices.flat)
    res.update({
        "trace_lower_s": round(lower_s, 3),
        "compile_s": round(compile_s, 3),
        "first_step_ms": round(warm_times[0] * 1e3, 3),
        # CPU seconds of all this process's threads per timed step: less sensitive than wall
        # time to other processes competing for the cores (but counts spinning threads).
        "process_cpu_ms_per_step": round(cpu_per_step * 1e3, 3),
        "pipelined_step_ms": round(pipelined * 1e3, 3),
        "pipelined_tokens_per_s": round(bench.tokens_per_step / pipelined, 1),
        "peak_flops": per_device_peak,
        "peak_flops_source": peak_source + ("" if jax.devices()[0].platform == "cpu"
                                            else f" x {n_dev} devices"),
        "flops_convention": harness.FLOPS_CONVENTION,
        "peak_memory_bytes_per_device": mem,
        "peak_memory_source": mem_source,
        "state_bytes_per_device": max(harness.state_bytes_per_device(state).values()),
        "final_loss": float(jax.device_get(compiled(state, bench.batches[0])[1]["loss"])),
    })
    return res, bench


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    if config is None:
        raise app.UsageError("--config is required, e.g. --config=bench/configs/nanogpt.py:baby")
    res, bench = measure(config, steps=_STEPS.value, warmup=_WARMUP.value,
                         profile_dir=_PROFILE.value)
    extra = {"config_file": flags.FLAGS["config"].config_filename
             if hasattr(flags.FLAGS["config"], "config_filename") else None}
    if _NOTE.value:
        extra["note"] = _NOTE.value
    rec = harness.record("throughput", res, config=bench.run.config, bench=bench, extra=extra)
    harness.publish(rec, f"{rec['config']['name']}:{rec['config']['rung']}  {res['step_ms_median']:.1f} "
                    f"ms/step (p10 {res['step_ms_p10']:.1f}, p90 {res['step_ms_p90']:.1f})  "
                    f"{res['tokens_per_s']:.0f} tok/s  MFU {100 * (res['mfu'] or 0):.1f}%  "
                    f"compile {res['compile_s']:.1f}s", _RESULTS.value)

if __name__ == "__main__":
    define_flags()
    app.run(main)
