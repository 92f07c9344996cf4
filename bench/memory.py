"""Memory per device under FSDP: params + optimizer state should split about evenly.

    python -m bench.memory [--config=bench/configs/nanogpt.py:small] [--fsdp=8]
        [--results_dir=bench/results]

On a CPU the devices are simulated (XLA_FLAGS=--xla_force_host_platform_device_count=N is set
here before JAX starts, unless XLA_FLAGS already names a count). For mesh data=1, fsdp=N it
builds the trainer's state and reports, per device, the bytes of the parameter and optimizer
state shards it holds (from the arrays' addressable shards), against the unsharded total / N;
and XLA's own per-device estimate of the compiled train step (arguments, outputs,
temporaries). Dimensions the fsdp axis does not divide stay replicated (lm.sharding), which is
what makes the ratio a little above 1.
"""

from __future__ import annotations

import sys


if __name__ == "__main__":
    from bench import force_host_devices
    force_host_devices(sys.argv, "--fsdp=", default=8)

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from bench import harness  # noqa: E402


def define_flags():
    """Command-line flags (defined only when run as a program, so modules import cleanly)."""
    global _CONFIG, _FSDP, _RESULTS
    _CONFIG = config_flags.DEFINE_config_file("config", "bench/configs/nanogpt.py:small",
                                              "Config file[:arg].")
    _FSDP = flags.DEFINE_integer("fsdp", 8, "Size of the fsdp mesh axis (data=1, tensor=1).")
    _RESULTS = flags.DEFINE_string("results_dir", "bench/results", "Where <device>.jsonl goes ('' = don't write).")


def fsdp_memory(config, fsdp: int) -> tuple[dict, "harness.Bench"]:
    """Per-device state bytes and XLA's memory analysis of the step under mesh fsdp=`fsdp`."""
    import copy
    import jax
    config = copy.deepcopy(config)
    if jax.device_count() < fsdp:
        raise ValueError(f"--fsdp={fsdp} needs {fsdp} devices, only {jax.device_count()} exist "
                         "(set XLA_FLAGS=--xla_force_host_platform_device_count before JAX starts)")
    with config.unlocked():
        config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 1, fsdp, 1
        if config.train.batch_size % fsdp:
            config.train.batch_size = fsdp * -(-config.train.batch_size // fsdp)
    bench = harness.prepare(config, num_batches=1)
    per_device = harness.state_bytes_per_device(bench.state)
    total = sum(leaf.nbytes for leaf in jax.tree.leaves(
        {"params": bench.state["params"], "opt_state": bench.state["opt_state"]}))
    params_total = sum(leaf.nbytes for leaf in jax.tree.leaves(bench.state["params"]))
    compiled, _, _ = harness.compile_step(bench)
    analysis = {}
    try:
        ma = compiled.memory_analysis()
        analysis = {k: int(getattr(ma, k)) for k in (
            "argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes",
            "alias_size_in_bytes", "generated_code_size_in_bytes") if hasattr(ma, k)}
    except Exception as e:  # not every backend implements it
        analysis = {"error": str(e)}
    worst = max(per_device.values())
    res = {
        "fsdp": fsdp,
        "state_bytes_total": int(total),
        "param_bytes_total": int(params_total),
        "state_bytes_ideal_per_device": total / fsdp,
        "state_bytes_per_device_max": int(worst),
        "state_bytes_per_device_min": int(min(per_device.values())),
        "ratio_to_ideal": worst / (total / fsdp),
        "xla_memory_analysis_per_device": analysis,
    }
    return res, bench


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    res, bench = fsdp_memory(_CONFIG.value, _FSDP.value)
    rec = harness.record("fsdp_memory", res, config=bench.run.config, bench=bench)
    harness.publish(rec, f"fsdp={res['fsdp']}: params+optimizer {res['state_bytes_total'] / 2**20:.1f} "
                    f"MiB total, {res['state_bytes_per_device_max'] / 2**20:.2f} MiB on the fullest "
                    f"device = {res['ratio_to_ideal']:.3f} x total/{res['fsdp']}", _RESULTS.value)

if __name__ == "__main__":
    define_flags()
    app.run(main)
