"""What the benchmark runs on: device peaks, a measured CPU peak, memory, machine and versions.

MFU = achieved model FLOP/s / peak FLOP/s of the device for the compute dtype. Accelerator
peaks are the vendors' dense (no 2:4 sparsity) matmul numbers; a CPU has no useful datasheet
number, so its "peak" is measured once per process as the best FLOP/s of a large jnp.dot in
that dtype (what XLA's own matmul reaches on this machine, all cores).
"""

from __future__ import annotations

import functools
import os
import platform
import resource
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

# Peak dense (no 2:4 sparsity) matmul TFLOP/s of one device: device_kind substring, bf16, f32.
# The first match wins, so longer names come before their prefixes. f32 on NVIDIA GPUs is the
# TF32 tensor-core rate (XLA's default matmul precision there); TPUs run f32 matmuls as bf16
# passes by default, so their bf16 number is listed. V100 has no bf16: its fp16 rate is given.
_PEAK_TABLE = """
GB200        2500  1250
B200         2250  1100
GH200         989   494.5
H200          989   494.5
H100 PCIe     756   378
H100          989   494.5
H800          989   494.5
A100          312   156
A800          312   156
L40S          362   183
L4            121    60
A10G           70    35
A10           125    62.5
V100          125    15.7
T4             65     8.1
TPU v6        918   918
TPU v5p       459   459
TPU v5 lite   197   197
TPU v5e       197   197
TPU v5        459   459
TPU v4        275   275
TPU v3        123   123
TPU v2         45    45
"""
PEAKS = tuple(
    (" ".join(row[:-2]), {"bfloat16": float(row[-2]) * 1e12, "float32": float(row[-1]) * 1e12})
    for row in (line.split() for line in _PEAK_TABLE.strip().splitlines()))


def table_peak(device_kind: str, dtype: str) -> float | None:
    """Datasheet peak FLOP/s of one device of this kind, or None if not in the table."""
    for name, peaks in PEAKS:
        if name.lower() in device_kind.lower():
            return peaks.get(dtype)
    return None


@functools.lru_cache(maxsize=None)
def measured_matmul_peak(dtype: str = "float32", n: int = 2048, repeats: int = 5) -> float:
    """Best FLOP/s of an [n, n] x [n, n] jnp.dot on the default device (once per process)."""
    dt = jnp.dtype(dtype)
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32).astype(dt)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32).astype(dt)
    dot = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=dt))
    dot(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        dot(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best


def device_peak(device, dtype: str, cpu_n: int = 2048) -> tuple[float, str]:
    """(peak FLOP/s of one device, where the number comes from)."""
    if device.platform == "cpu":
        # All host "devices" share the same cores: the measured number is for the whole CPU.
        return measured_matmul_peak(dtype, cpu_n), f"measured: best {cpu_n}^3 jnp.dot in {dtype}"
    peak = table_peak(device.device_kind, dtype)
    if peak is None:
        return float("nan"), f"unknown: {device.device_kind!r} is not in bench.hardware.PEAKS"
    return peak, f"datasheet dense {dtype} for {device.device_kind}"


def peak_memory(devices) -> tuple[list[int | None], str]:
    """Peak bytes in use per device, and how they were measured.

    Accelerators report `peak_bytes_in_use` through device.memory_stats(). The CPU backend
    has no such counter, so there the number is the process's resident-set high-water mark
    (getrusage ru_maxrss): all host devices, plus Python, JAX and the compiler.
    """
    stats = [d.memory_stats() if hasattr(d, "memory_stats") else None for d in devices]
    if all(s and "peak_bytes_in_use" in s for s in stats):
        return [int(s["peak_bytes_in_use"]) for s in stats], "device.memory_stats peak_bytes_in_use"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss *= 1 if sys.platform == "darwin" else 1024  # Linux reports KiB
    return [int(rss)], "process RSS high-water mark (getrusage ru_maxrss; CPU has no device counter)"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags(wanted=("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")) -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [w for w in wanted if w in have]
    except OSError:
        pass
    return []


def git_revision() -> dict:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                    cwd=root, capture_output=True, text=True,
                                    timeout=10).stdout.strip())
        return {"commit": rev or None, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def versions() -> dict:
    import flax
    import jaxlib
    import optax
    return {"python": platform.python_version(), "jax": jax.__version__,
            "jaxlib": jaxlib.__version__, "flax": flax.__version__, "optax": optax.__version__,
            "numpy": np.__version__}


def machine() -> dict:
    """The host and the devices, as recorded with every result."""
    d = jax.devices()[0]
    return {
        "hostname": platform.node(),
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_flags": cpu_flags(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "platform": d.platform,
        "device_kind": d.device_kind,
        "num_devices": jax.device_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def device_label(device=None) -> str:
    """File-name-safe device kind: 'cpu', 'nvidia_h100_80gb_hbm3', 'tpu_v5_lite'."""
    device = device or jax.devices()[0]
    kind = "cpu" if device.platform == "cpu" else device.device_kind
    return "".join(c if c.isalnum() else "_" for c in kind.lower()).strip("_") or "unknown"
