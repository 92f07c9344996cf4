"""What keeps a training run from losing or corrupting work: a NaN/Inf guard, a workdir lock,
and SIGTERM/SIGINT turned into a checkpoint at the next step boundary.

    with Guard(workdir, lock=True) as g:   # refuses a workdir another live trainer holds
        ... g.check_metrics(record)          # a non-finite loss stops the run (NonFiniteError)
        ... g.check_state(state, step)       # before a save: a diverged state is never saved,
                                             # so rotation never drops the last finite checkpoint
        ... if g.should_stop(step): save, then raise g.stopped(step)

The lock is WORKDIR/.lock holding "pid host"; a lock whose process is gone (same host) is
taken over. Preemption (SLURM, TPU) sends SIGTERM: the handler only sets a flag; the loop saves
a checkpoint at the next step boundary and stops with `Stopped` (exit status 128 + signal), and
rerunning the same command resumes there. A second Ctrl-C interrupts at once.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import threading

import jax
import jax.numpy as jnp
import numpy as np

from lm.errors import LmError

LOCK_NAME = ".lock"


class NonFiniteError(LmError):
    """The loss or the train state became NaN/Inf: the run diverged."""


class WorkdirLocked(LmError):
    """Another live trainer holds the workdir."""


class Stopped(LmError):
    """SIGTERM/SIGINT: a checkpoint was saved at a step boundary and the run stopped."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum, self.exit_code = signum, 128 + signum


# ----------------------------------------------------------------------------- the lock

def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def lock_owner(workdir: str) -> tuple[int, str] | None:
    """(pid, host) written in WORKDIR/.lock, or None when there is no readable lock."""
    try:
        with open(os.path.join(workdir, LOCK_NAME)) as f:
            pid, host = f.read().split()[:2]
        return int(pid), host
    except (OSError, ValueError):
        return None


def stale_lock(workdir: str) -> bool:
    """True when WORKDIR/.lock names a process of this host that no longer runs."""
    owner = lock_owner(workdir)
    return owner is not None and owner[1] == socket.gethostname() and not _alive(owner[0])


class WorkdirLock:
    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, LOCK_NAME)
        self.held = False

    def acquire(self) -> None:
        me = f"{os.getpid()} {socket.gethostname()}\n"
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = lock_owner(os.path.dirname(self.path))
                if owner is None or stale_lock(os.path.dirname(self.path)):
                    # a dead trainer's lock (or a torn one): take it over
                    try:
                        os.unlink(self.path)
                    except FileNotFoundError:
                        pass
                    continue
                pid, host = owner
                raise WorkdirLocked(
                    f"--workdir={os.path.dirname(self.path)} is in use by another trainer "
                    f"(pid {pid} on {host}); wait for it to finish, use another --workdir, or "
                    f"delete {self.path} if that process is gone") from None
            with os.fdopen(fd, "w") as f:
                f.write(me)
            self.held = True
            return
        raise WorkdirLocked(f"could not take the lock {self.path}; another trainer is starting")

    def release(self) -> None:
        if self.held and lock_owner(os.path.dirname(self.path)) == (os.getpid(), socket.gethostname()):
            try:
                os.unlink(self.path)
            except OSError:
                pass
        self.held = False


# ----------------------------------------------------------------------------- finite values

@jax.jit
def _all_finite(tree):
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def all_finite(tree) -> bool:
    """True when every float leaf of the pytree is free of NaN and Inf."""
    return bool(jax.device_get(_all_finite(tree)))


# ----------------------------------------------------------------------------- the guard

class Guard:
    """Lock + stop signals + finite checks for one training run (see the module docstring)."""

    def __init__(self, workdir: str, *, lock: bool = True, signals=(signal.SIGTERM, signal.SIGINT)):
        self.lock = WorkdirLock(workdir) if lock else None
        self.signals, self.signum, self._old = signals, None, {}
        self.last_saved = None  # the newest step saved by this run (finite by construction)

    def __enter__(self):
        if self.lock is not None:
            self.lock.acquire()
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._old[s] = signal.signal(s, self._on_signal)
        return self

    def __exit__(self, *exc):
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old = {}
        if self.lock is not None:
            self.lock.release()
        return False

    def _on_signal(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without a checkpoint
        self.signum = signum

    def should_stop(self, step: int, sync: bool = False) -> bool:
        """Whether a stop signal arrived. With several processes (sync=True), they agree on
        it (a collective) so that all of them save the same step."""
        flag = self.signum is not None
        if jax.process_count() > 1:
            if not sync:
                return False
            from jax.experimental import multihost_utils

            got = multihost_utils.process_allgather(np.int32(self.signum or 0))
            self.signum = self.signum or (int(np.max(got)) or None)
            flag = self.signum is not None
        return flag

    def stopped(self, step: int) -> Stopped:
        name = signal.Signals(self.signum).name
        return Stopped(f"stopped by {name} after step {step}; a checkpoint of step {step} is "
                       "saved: rerun the same command to resume", self.signum)

    def _diverged(self, what: str, step: int) -> NonFiniteError:
        kept = (f"the last finite checkpoint (step {self.last_saved}) is kept"
                if self.last_saved is not None else "no checkpoint of this run was saved after it")
        return NonFiniteError(
            f"training diverged: {what} at step {step}; stopped ({kept}). Lower "
            "train.learning_rate, or check train.grad_clip and the data")

    def check_metrics(self, record: dict) -> None:
        """Raise NonFiniteError if a logged step's loss, gradient norm or learning rate is NaN/Inf."""
        for key in ("loss", "grad_norm", "learning_rate"):
            value = record.get(key)
            if isinstance(value, float) and not math.isfinite(value):
                raise self._diverged(f"{key} is {value}", record.get("step"))

    def check_state(self, state: dict, step: int) -> None:
        """Raise NonFiniteError (instead of saving) if the params hold NaN/Inf."""
        if not all_finite(state["params"]):
            raise self._diverged("the parameters hold NaN/Inf", step)

    def saved(self, step: int) -> None:
        self.last_saved = step
