"""Benchmark configurations (experiment-style files: get_config(arg) -> ConfigDict)."""
