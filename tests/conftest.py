"""Tests run on CPU with 8 simulated devices, so sharding tests see a real mesh."""

import os

# Child processes (`lm train` subprocesses, notebook kernels) inherit the count through XLA_FLAGS;
# this process sets it through lm.devices before JAX starts (public jax config).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from lm import devices  # noqa: E402

devices.configure_cpu_devices(8)


import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

# One persistent XLA cache for the whole session, subprocesses and notebook kernels included
# (they inherit the environment): the many tests that train the same tiny configs compile
# each program once. Every size and compile time counts (JAX skips < 1 s compiles by default).
XLA_CACHE = tempfile.mkdtemp(prefix="lm-tests-xla-")
atexit.register(shutil.rmtree, XLA_CACHE, ignore_errors=True)
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", XLA_CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
