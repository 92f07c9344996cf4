"""Checkpoints: an Orbax CheckpointManager under WORKDIR/checkpoints.

A checkpoint holds the train state (params, optimizer state, step, RNG key) as one sharded
pytree and the data iterator position as JSON. Saves are asynchronous (training goes on
while the files are written) and atomic (a step directory appears only when complete, so a
kill -9 mid-save leaves the previous checkpoint as the latest). Restoring takes an abstract
target whose leaves carry shardings, so a checkpoint loads onto any mesh shape.

Verified on restore: each save stores a checksum of the state's bits (a wrapping integer sum,
independent of the sharding) beside the data position, and a restored state must match it and
hold only finite floats. Restoring the latest checkpoint falls back, with a warning, to the
newest one that restores and verifies (corrupt bytes, a deleted state/, a truncated file, an
empty step folder); the trainer moves the bad ones aside into WORKDIR/corrupt_checkpoints/.

Before a step is restored its metadata (tree, shapes) is read and compared with the target: a
checkpoint written by another config (other width, layers, vocabulary, optimizer) is intact,
so it is never called damaged nor moved aside; `CheckpointMismatch` names the differing arrays
and the config keys that differ from the config the checkpoint was saved with (each save keeps
a copy of WORKDIR/config.json beside the data position).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from lm.errors import LmError

CHECKSUM_KEY = "_lm_checksum"
CONFIG_KEY = "_lm_config"  # the run's config.json at save time (to name what changed)


class _QuietReadOnly:
    """Orbax warns three times that a read-only manager (lm eval, lm sample) will not save."""

    def filter(self, record) -> bool:
        text = record.getMessage()
        return not ("read_only=True" in text or "Given directory is read only" in text)


def _quiet_read_only_warnings() -> None:
    import logging

    for name in ("absl", "orbax"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _QuietReadOnly) for f in logger.filters):
            logger.addFilter(_QuietReadOnly())


def _ignore_closed_loop_callbacks() -> None:
    """After a failed restore, TensorStore completes the reads still in flight and calls back
    into the event loop Orbax has already closed: Python prints each "Event loop is closed"
    as an unraisable exception (dozens of tracebacks). They have no consequence: drop them."""
    previous = sys.unraisablehook
    if getattr(previous, "_lm_closed_loop", False):
        return

    def hook(unraisable):
        e = unraisable.exc_value
        if isinstance(e, RuntimeError) and str(e) == "Event loop is closed":
            return
        previous(unraisable)

    hook._lm_closed_loop = True
    sys.unraisablehook = hook


def _showing_library_errors() -> bool:
    """--verbosity=0 (absl INFO) or LM_DEBUG=1: show what the filters below hide."""
    from absl import logging as absl_logging

    return absl_logging.get_verbosity() >= absl_logging.INFO or bool(os.environ.get("LM_DEBUG"))


class _QuietOrbaxErrors:
    """Orbax logs each failure of a background save or restore as an ERROR with a traceback
    (one per thread: dozens on a full disk) and then raises it to the caller, which reports it
    in one line."""

    def filter(self, record) -> bool:
        if record.levelno < 40 or "orbax" not in record.pathname.replace("\\", "/").split("/"):
            return True
        return _showing_library_errors()


class _QuietLostFutures:
    """asyncio logs "Future exception was never retrieved" for the writes of a failed save
    that Orbax abandons (the failure itself was raised once)."""

    def filter(self, record) -> bool:
        return "exception was never retrieved" not in record.getMessage() or _showing_library_errors()


def _quiet_orbax_errors() -> None:
    import logging

    for name, kind in (("absl", _QuietOrbaxErrors), ("asyncio", _QuietLostFutures)):
        logger = logging.getLogger(name)
        if not any(isinstance(f, kind) for f in logger.filters):
            logger.addFilter(kind())


class SaveFailed(LmError):
    """A checkpoint could not be written (full disk, lost permission); older ones are kept."""


def save_failure(directory: str, e: BaseException, step: int | None = None) -> SaveFailed:
    """The one-line error for an exception out of an Orbax save of `step` (when known)."""
    import re

    text = str(e).strip() or type(e).__name__
    m = re.search(r"/(\d+)\.orbax-checkpoint-tmp", text)
    what = f"checkpoint {m.group(1)}" if m else (f"checkpoint {step}" if step is not None else "a checkpoint")
    full = (isinstance(e, OSError) and e.errno == errno.ENOSPC) or "No space left" in text \
        or "RESOURCE_EXHAUSTED" in text
    why = ("no space left on device; free some space (or choose another disk)" if full
           else text.splitlines()[0][:300])
    return SaveFailed(f"could not write {what} in {directory}: {why}; the checkpoints written "
                      "before it are kept: run the same command again to resume from the newest")


class CheckpointMismatch(LmError):
    """The checkpoints are intact but were written by another config (other shapes or tree)."""


class CheckpointWarning(UserWarning):
    """A checkpoint that could not be used; an older one was restored instead."""


@jax.jit
def _checksum(tree):
    """A wrapping uint32 sum of every leaf's bits, weighted by leaf position (exact, and the
    same on any sharding: integer addition is associative)."""
    total = jnp.uint32(0)
    for i, x in enumerate(jax.tree.leaves(tree)):
        if x.dtype.itemsize == 4:
            bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
        elif x.dtype.itemsize == 2:
            bits = jax.lax.bitcast_convert_type(x, jnp.uint16).astype(jnp.uint32)
        else:
            bits = x.astype(jnp.uint32)
        total = total + jnp.uint32(2 * i + 1) * jnp.sum(bits, dtype=jnp.uint32)
    return total


def state_checksum(state) -> int:
    return int(jax.device_get(_checksum(state)))


def verify(state, data_state: dict) -> str | None:
    """Why a restored checkpoint is unusable (checksum mismatch, NaN/Inf), or None if it is fine."""
    want = data_state.get(CHECKSUM_KEY)
    if want is not None and state_checksum(state) != int(want):
        return "its contents do not match the checksum written with it (corrupt bytes)"
    from lm.guard import all_finite

    if not all_finite(state):
        return "it holds NaN/Inf values"
    return None


def _key_name(k) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def array_shapes(tree) -> dict[str, tuple]:
    """{'params/decoder/embed': shape} for every array-like leaf (abstract or metadata)."""
    out = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        shape = getattr(leaf, "shape", None)
        if shape is not None:
            out["/".join(_key_name(k) for k in path)] = tuple(shape)
    return out


def shape_differences(saved: dict, wanted: dict, limit: int = 3) -> list[str]:
    """'KEY: checkpoint [a,b] vs config [c,d]' lines, the params' first (the optimizer state
    follows them)."""
    fmt = lambda shape: "absent" if shape is None else "[" + ",".join(map(str, shape)) + "]"  # noqa: E731
    keys = sorted((k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k)),
                  key=lambda k: (not k.startswith("params/"), k))
    lines = [f"{k}: checkpoint {fmt(saved.get(k))} vs config {fmt(wanted.get(k))}" for k in keys]
    more = len(lines) - limit
    return lines[:limit] + ([f"{more} more"] if more > 0 else [])


def _flat(d, prefix=""):
    out = {}
    for k, v in (d.items() if isinstance(d, dict) else ()):
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(saved: dict | None, current: dict | None, limit: int = 6) -> list[str]:
    """'model.d_model: checkpoint 8 vs config 16' for the keys that differ (where to read
    and write a run, not what it is, are left out)."""
    if not isinstance(saved, dict) or not isinstance(current, dict):
        return []
    a, b = _flat(saved), _flat(current)
    where = ("data.path", "data.data_dir", "data.store_dir", "train.steps",
             "train.compilation_cache_dir")
    order = ("model.", "train.", "data.")  # what shapes the state first; experiment.* is a label
    keys = sorted((k for k in set(a) | set(b) if k not in where and not k.startswith("experiment.")
                   and json.dumps(a.get(k), default=str) != json.dumps(b.get(k), default=str)),
                  key=lambda k: (next((i for i, p in enumerate(order) if k.startswith(p)), 3), k))
    lines = [f"{k}: checkpoint {a.get(k)!r} vs config {b.get(k)!r}" for k in keys[:limit]]
    return lines + ([f"{len(keys) - limit} more keys"] if len(keys) > limit else [])


def _state_handler():
    """PyTree handler whose array handler splits a replicated array's save across replicas
    only for big arrays: for small ones the per-replica slicing (one tiny compile per
    shape and device) costs more than it saves."""
    th = ocp.type_handlers
    registry = th.create_type_handler_registry(
        (jax.Array, th.ArrayHandler(min_slice_bytes_for_replica_parallel=8 << 20)),
        (np.ndarray, th.NumpyHandler()), (int, th.ScalarHandler()), (float, th.ScalarHandler()),
        (np.number, th.ScalarHandler()))
    return ocp.PyTreeCheckpointHandler(type_handler_registry=registry)


class Checkpoints:
    """Save / restore train state + data position; keeps the newest `keep` steps."""

    def __init__(self, workdir: str, *, keep: int = 2, async_save: bool = True,
                 read_only: bool = False):
        # A URL (gs://...) is Orbax's to handle; abspath would make it a local folder "gs:".
        self.directory = (str(workdir).rstrip("/") + "/checkpoints" if "://" in str(workdir)
                          else os.path.join(os.path.abspath(workdir), "checkpoints"))
        if read_only:
            _quiet_read_only_warnings()
        _ignore_closed_loop_callbacks()
        _quiet_orbax_errors()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep if keep and keep > 0 else None,
            enable_async_checkpointing=async_save, create=not read_only, read_only=read_only)
        self._unfinished = None  # the step of the async save in flight, if any
        self.manager = ocp.CheckpointManager(
            self.directory, options=options,
            item_handlers={"state": _state_handler(), "data": ocp.JsonCheckpointHandler()})

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state, data_state: dict | None) -> None:
        """Start saving (returns before the files are written unless async is off)."""
        data = dict(data_state or {}, **{CHECKSUM_KEY: state_checksum(state)})
        config = _read_object(os.path.join(os.path.dirname(self.directory), "config.json"))
        if config is not None:
            data[CONFIG_KEY] = config
        args = ocp.args.Composite(state=ocp.args.PyTreeSave(state), data=ocp.args.JsonSave(data))
        self.wait()  # an earlier async save's failure is named as that step's, not this one's
        with self._saving(int(step)):
            self.manager.save(int(step), args=args, force=True)
        self._unfinished = int(step)

    @contextlib.contextmanager
    def _saving(self, step: int | None):
        """Failures of a save of `step` as one SaveFailed naming the step and the cause."""
        try:
            yield
        except LmError:
            raise
        except Exception as e:  # noqa: BLE001  (Orbax raises ValueError, OSError, RuntimeError)
            raise save_failure(self.directory, e, step) from e

    def _check_shapes(self, abstract_state, step: int, config: dict | None) -> None:
        """Read the step's metadata (an error if it is unreadable: a damaged checkpoint) and
        raise CheckpointMismatch when its arrays are not the ones `abstract_state` expects."""
        meta = self.manager.item_metadata(step)
        tree = meta["state"] if meta is not None and "state" in meta else None
        if tree is None:
            raise ValueError("its state metadata is missing")
        saved, wanted = array_shapes(tree), array_shapes(abstract_state)
        if saved == wanted:
            return
        step_dir = os.path.join(self.directory, str(step))
        was = (_read_object(os.path.join(step_dir, "data", "metadata")) or {}).get(CONFIG_KEY)
        now = config if config is not None else _read_object(
            os.path.join(os.path.dirname(self.directory), "config.json"))
        keys = config_differences(was, now)
        raise CheckpointMismatch(
            f"checkpoint {step} in {self.directory} was written by a different config "
            f"(the checkpoints are intact; nothing was moved): "
            + (f"config {'; '.join(keys)}; " if keys else "")
            + f"arrays {'; '.join(shape_differences(saved, wanted))}; "
            "run with the config it was written with, or use a new --workdir")

    def _restore_step(self, abstract_state, step: int, config: dict | None = None):
        self._check_shapes(abstract_state, step, config)
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(
                item=abstract_state,
                restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_state)),
            data=ocp.args.JsonRestore()))
        data = dict(out["data"] or {})
        problem = verify(out["state"], data)
        if problem:
            raise ValueError(problem)
        data.pop(CHECKSUM_KEY, None)
        data.pop(CONFIG_KEY, None)
        return out["state"], data

    def restore(self, abstract_state, step: int | None = None, config: dict | None = None):
        """(state, data_state) of `step` (default: the newest good one), placed as
        `abstract_state` says.

        abstract_state: a pytree of jax.ShapeDtypeStruct with `sharding` set (the target
        layout; it may differ from the one the checkpoint was written with). A named step
        that fails to restore or verify is an error; without one, bad checkpoints are skipped
        with a CheckpointWarning (see `bad_steps`). A checkpoint of another config raises
        CheckpointMismatch at once (`config`: the run's config dict to name the differing keys;
        default WORKDIR/config.json).
        """
        steps = sorted(set(self.manager.all_steps()) | set(step_dirs(self.directory)))
        if not steps:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        if step is not None and step not in steps:
            raise FileNotFoundError(
                f"no checkpoint for step {step} in {self.directory}; have {steps}")
        self.bad_steps = []
        for s in ([step] if step is not None else steps[::-1]):
            try:
                out = self._restore_step(abstract_state, s, config)
                self.restored_step = s
                return out
            except CheckpointMismatch:
                raise
            except Exception as e:  # noqa: BLE001  (any failure of a damaged checkpoint)
                why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                if step is not None:
                    raise ValueError(f"checkpoint {s} in {self.directory} cannot be used: "
                                     f"{why[:300]}") from e
                self.bad_steps.append(s)
                older = [x for x in steps if x < s]
                warnings.warn(f"checkpoint {s} in {self.directory} cannot be used ({why[:200]}); "
                              + (f"falling back to step {older[-1]}" if older else "no older one"),
                              CheckpointWarning, stacklevel=2)
        raise ValueError(f"no usable checkpoint in {self.directory} (all of {steps} are damaged); "
                         "move the directory away to start over")

    def quarantine(self, steps) -> None:
        """Move damaged step folders to WORKDIR/corrupt_checkpoints/ so that new saves of those
        steps can happen (they are kept for inspection, not deleted)."""
        if not steps:
            return
        self.manager.wait_until_finished()
        aside = os.path.join(os.path.dirname(self.directory), "corrupt_checkpoints")
        os.makedirs(aside, exist_ok=True)
        for s in steps:
            src = os.path.join(self.directory, str(s))
            if os.path.exists(src):
                shutil.move(src, os.path.join(aside, f"{s}-{time.strftime('%Y%m%d-%H%M%S')}"))
        self.manager.reload()

    def wait(self) -> None:
        """Until the async save in flight is written (its failure raised as SaveFailed)."""
        with self._saving(self._unfinished):
            self.manager.wait_until_finished()
        self._unfinished = None

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self.manager.close()


def _read_object(path: str) -> dict | None:
    """A local JSON object file, or None (absent, unreadable, not an object, a URL)."""
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def step_dirs(directory: str) -> list[int]:
    """Step folders on disk (Orbax may not list a damaged one)."""
    if not os.path.isdir(directory):
        return []
    return sorted(int(d) for d in os.listdir(directory) if d.isdigit())


def abstract_like(tree, shardings):
    """ShapeDtypeStructs of `tree` (arrays or structs) carrying the given shardings."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        tree, shardings)


def checkpoint_step(workdir: str, step: int | None = None) -> int:
    """The checkpoint step that `lm eval` / `lm sample` would load from an `lm train` workdir
    (the newest, or `step`); FileNotFoundError saying what is missing."""
    if not workdir:
        raise ValueError("--workdir=DIR (an `lm train` workdir) is required")
    if "://" in str(workdir):  # a gs:// workdir: list it through etils.epath
        return _url_checkpoint_step(str(workdir).rstrip("/"), step)
    if not os.path.isdir(workdir):
        raise FileNotFoundError(f"--workdir={workdir}: no such directory")
    if not os.path.isfile(os.path.join(workdir, "config.json")):
        raise FileNotFoundError(f"--workdir={workdir}: no config.json, so not an `lm train` workdir")
    directory = os.path.join(workdir, "checkpoints")
    steps = sorted(step_dirs(directory))
    if not steps:
        raise FileNotFoundError(f"--workdir={workdir}: no checkpoint in {directory} "
                                "(train first, or wait for the first checkpoint)")
    if step is not None and step not in steps:
        raise FileNotFoundError(f"--workdir={workdir}: no checkpoint for step {step}; have {steps}")
    return steps[-1] if step is None else step


def _url_checkpoint_step(workdir: str, step: int | None) -> int:
    from etils import epath

    root = epath.Path(workdir)
    if not (root / "config.json").exists():
        raise FileNotFoundError(f"--workdir={workdir}: no config.json, so not an `lm train` workdir")
    directory = root / "checkpoints"
    steps = sorted(int(p.name) for p in (directory.iterdir() if directory.exists() else [])
                   if p.name.isdigit())
    if not steps:
        raise FileNotFoundError(f"--workdir={workdir}: no checkpoint in {directory}")
    if step is not None and step not in steps:
        raise FileNotFoundError(f"--workdir={workdir}: no checkpoint for step {step}; have {steps}")
    return steps[-1] if step is None else step
