"""Benchmarks of the trainer: throughput and MFU, compile time against depth, memory per device.

    python -m bench.throughput --config=bench/configs/nanogpt.py:baby
    python -m bench.compile_time --depths=2,4,8,16
    python -m bench.memory --fsdp=8

Each appends one JSON line per measurement to bench/results/<device kind>.jsonl; see
bench/README.md for what every number means.
"""
