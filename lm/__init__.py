"""lm: transformer language models in JAX/Flax, with experiments that can say "not yet"."""

import os as _os
import sys as _sys

__version__ = "0.1.0"


def _one_host_device_per_core() -> None:
    """On a CPU, run one XLA host device per core (data parallel over them).

    XLA's intra-op threading of small matmuls uses two cores poorly; one single-threaded copy
    of the step per core is 1.6x faster on nanoGPT's CPU shape (bench/README.md). It only
    affects the CPU backend, and only if JAX has not started yet and XLA_FLAGS sets no count.
    LM_CPU_DEVICES=N picks the count (1 turns it off).
    """
    flags = _os.environ.get("XLA_FLAGS", "")
    if "jax" in _sys.modules or "xla_force_host_platform_device_count" in flags:
        return
    cores = len(_os.sched_getaffinity(0)) if hasattr(_os, "sched_getaffinity") else _os.cpu_count()
    text = _os.environ.get("LM_CPU_DEVICES") or ""
    if text and not text.strip().isdigit():  # a library must not die on import: say it, ignore it
        print(f"lm: warning: LM_CPU_DEVICES={text!r} is not a whole number of devices; ignoring it",
              file=_sys.stderr)
        text = ""
    n = int(text or min(cores or 1, 8))
    if n > 1:
        _os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()


_one_host_device_per_core()
