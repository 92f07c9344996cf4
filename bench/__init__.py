"""Benchmarks of the trainer: throughput and MFU, compile time against depth, memory per device.

    python -m bench.throughput --config=bench/configs/nanogpt.py:baby
    python -m bench.compile_time --depths=2,4,8,16
    python -m bench.memory --fsdp=8

Each appends one JSON line per measurement to bench/results/<device kind>.jsonl; see
bench/README.md for what every number means.
"""

import os as _os


def force_host_devices(argv, flag: str = "--host_devices=", default: int = 0) -> None:
    """Before JAX starts: split the CPU into N host devices (XLA_FLAGS device count) when
    `flag`N is on the command line (or `default` > 0), unless XLA_FLAGS already sets a count.

    On a small CPU, N = cores with a data-parallel mesh runs one single-threaded copy of the
    step per core, which uses the cores far better than XLA's intra-op threading of small
    matmuls (see bench/README.md).
    """
    n = default
    for a in argv:
        if a.startswith(flag):
            n = int(a[len(flag):])
    xla_flags = _os.environ.get("XLA_FLAGS", "")
    if n > 0 and "xla_force_host_platform_device_count" not in xla_flags:
        _os.environ["XLA_FLAGS"] = f"{xla_flags} --xla_force_host_platform_device_count={n}".strip()
    from lm import devices

    devices.configure_cpu_devices()  # otherwise lm's default (one CPU device, or LM_CPU_DEVICES)
