"""How many XLA devices a CPU run splits into, and how several of them stay safe on a busy machine.

One CPU device is the default. Several (`LM_CPU_DEVICES=N`, or `configure_cpu_devices(N)`) run one
single-threaded copy of a data-parallel step per device, which on a small CPU can use the cores
better than XLA's intra-op threading (bench/README.md), but the copies meet in all-reduces.

Why several devices aborted on a loaded machine: XLA's CPU client runs each device's share of a
program on a thread pool of max(cores, devices) threads, and a share that reaches an all-reduce
holds its thread until every other share arrives. With several programs in flight (JAX dispatches
asynchronously), the waiting shares of one program can hold every thread while the share they wait
for sits queued behind them: after 40 s XLA kills the process ("Expected 2 threads to join the
rendezvous, but only 1 of them arrived on time"). Load only changes the timing. Reproduced on
2 cores at load ~15: 3 of 3 runs of 2000 async train+eval steps aborted; 0 of 3 when each step's
result was waited for (`settle`), 0 of 3 with a larger pool. So on a multi-device CPU mesh the
loops keep one program in flight.
"""

import os
import re
import sys

ENV = "LM_CPU_DEVICES"
_XLA_COUNT_FLAG = "xla_force_host_platform_device_count"  # XLA_FLAGS: leaks into children


def _requested(count: int | None) -> int | None:
    """The count asked for: the argument, else LM_CPU_DEVICES, else None (no preference)."""
    if count is None:
        text = os.environ.get(ENV, "").strip()
        if not text:
            return None
        if not text.isdigit() or int(text) < 1:
            raise ValueError(f"{ENV}={text!r} is not a whole number of devices (>= 1); "
                             f"unset it for one CPU device or set e.g. {ENV}=2")
        return int(text)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"CPU device count must be a whole number >= 1, got {count!r}")
    return count


def configure_cpu_devices(count: int | None = None) -> int:
    """Choose how many devices the CPU splits into; call before JAX starts (returns the count).

    `count` wins, then LM_CPU_DEVICES=N, then a count the user put in XLA_FLAGS
    (--xla_force_host_platform_device_count) or in jax.config, else ONE device. Through public
    jax.config (`jax_num_cpu_devices`): it configures this process's CPU client only and, unlike
    XLA_FLAGS, does not leak into child processes. Once JAX has started the count is fixed: then
    this returns the count in effect, with a one-line warning if it differs from the request.
    Raises ValueError (one line) for a bad count.
    """
    import jax

    wanted = _requested(count)
    if wanted is None:
        chosen = _users_own_count(jax)
        if chosen is not None:
            return chosen
        wanted = 1
    try:
        jax.config.update("jax_num_cpu_devices", wanted)
    except RuntimeError:  # JAX has started: too late to change the CPU client
        have = _count_in_effect(jax)
        if have != wanted:
            print(f"lm: warning: JAX already started with {have} CPU device(s); {wanted} needs "
                  "configure_cpu_devices() (or LM_CPU_DEVICES) before the first JAX operation",
                  file=sys.stderr)
        return have
    return wanted


def _users_own_count(jax) -> int | None:
    """A count already chosen through jax.config or XLA_FLAGS (read without starting JAX)."""
    if jax.config.jax_num_cpu_devices >= 0:
        return jax.config.jax_num_cpu_devices
    found = re.findall(rf"--{_XLA_COUNT_FLAG}=(\d+)", os.environ.get("XLA_FLAGS", ""))
    return int(found[-1]) if found else None


def _count_in_effect(jax) -> int:
    """CPU devices this process has (or will have); starts JAX's CPU backend if needed."""
    try:
        return len(jax.devices("cpu"))
    except RuntimeError:  # no CPU backend (JAX_PLATFORMS without cpu)
        return 0


def wait_each_step(mesh) -> bool:
    """True when `mesh` spans several CPU devices: there, keep one program in flight."""
    devices = mesh.devices.flat
    return mesh.devices.size > 1 and devices[0].platform == "cpu"


def settle(mesh, result):
    """`result` (a step's output), waited for when the mesh spans several CPU devices, so that
    the next step is dispatched only after this one's collectives are done (module docstring)."""
    if wait_each_step(mesh):
        import jax

        jax.block_until_ready(result)
    return result
