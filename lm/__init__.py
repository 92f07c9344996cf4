"""lm: transformer language models in JAX/Flax, with experiments that can say "not yet"."""

import os as _os
import sys as _sys

__version__ = "0.1.0"


def _one_host_device_per_core() -> None:
    """On a CPU, run one XLA host device per core (data parallel over them).

    XLA's intra-op threading of small matmuls uses two cores poorly; one single-threaded copy
    of the step per core is 1.6x faster on nanoGPT's CPU shape (bench/README.md). Set through
    jax.config (`jax_num_cpu_devices`), which configures the CPU client only and, unlike
    XLA_FLAGS, does not leak into child processes. Skipped when another platform is forced
    (JAX_PLATFORMS without cpu), when XLA_FLAGS already sets a count, or once JAX has started.
    LM_CPU_DEVICES=N picks the count (1 turns it off).
    """
    platforms = _os.environ.get("JAX_PLATFORMS", "")
    if platforms and "cpu" not in platforms.split(","):
        return
    if "xla_force_host_platform_device_count" in _os.environ.get("XLA_FLAGS", ""):
        return
    cores = len(_os.sched_getaffinity(0)) if hasattr(_os, "sched_getaffinity") else _os.cpu_count()
    text = _os.environ.get("LM_CPU_DEVICES") or ""
    if text and not text.strip().isdigit():  # a library must not die on import: say it, ignore it
        print(f"lm: warning: LM_CPU_DEVICES={text!r} is not a whole number of devices; ignoring it",
              file=_sys.stderr)
        text = ""
    n = int(text or min(cores or 1, 8))
    import jax
    from jax._src import xla_bridge

    if n > 1 and not xla_bridge.backends_are_initialized() and jax.config.jax_num_cpu_devices < 0:
        jax.config.update("jax_num_cpu_devices", n)


_one_host_device_per_core()
