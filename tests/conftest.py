"""Tests run on CPU with 8 simulated devices, so sharding tests see a real mesh."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")


import pytest  # noqa: E402


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    """A persistent XLA cache for one test module: reruns of the same tiny config skip compiling."""
    import jax

    path = str(tmp_path_factory.mktemp("xla_cache"))
    keys = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
            "jax_persistent_cache_min_entry_size_bytes")
    old = {k: getattr(jax.config, k) for k in keys}
    for k, v in zip(keys, (path, 0, 0)):
        jax.config.update(k, v)
    yield path
    for k, v in old.items():
        jax.config.update(k, v)
