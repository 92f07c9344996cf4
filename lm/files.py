"""Writing files so that a crash never leaves half of one behind."""

from __future__ import annotations

import os
import sys
import tempfile


def is_main_process() -> bool:
    """False on every process but 0 of a multi-process (jax.distributed) run: only process 0
    writes metrics, records and reports. Never starts JAX itself."""
    jax = sys.modules.get("jax")
    return jax is None or not jax.distributed.is_initialized() or jax.process_index() == 0


def atomic_write(path: str, data: str | bytes) -> None:
    """Write to a temp file beside `path`, fsync, then rename over it: readers see the old
    file or the new one, never a torn one."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
