"""Checkpoints: an Orbax CheckpointManager under WORKDIR/checkpoints.

A checkpoint holds the train state (params, optimizer state, step, RNG key) as one sharded
pytree and the data iterator position as JSON. Saves are asynchronous (training goes on
while the files are written) and atomic (a step directory appears only when complete, so a
kill -9 mid-save leaves the previous checkpoint as the latest). Restoring takes an abstract
target whose leaves carry shardings, so a checkpoint loads onto any mesh shape.
"""

from __future__ import annotations

import os

import jax
import numpy as np
import orbax.checkpoint as ocp


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
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep if keep and keep > 0 else None,
            enable_async_checkpointing=async_save, create=not read_only, read_only=read_only)
        self.manager = ocp.CheckpointManager(
            self.directory, options=options,
            item_handlers={"state": _state_handler(), "data": ocp.JsonCheckpointHandler()})

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state, data_state: dict | None) -> None:
        """Start saving (returns before the files are written unless async is off)."""
        args = ocp.args.Composite(state=ocp.args.PyTreeSave(state),
                                  data=ocp.args.JsonSave(data_state or {}))
        self.manager.save(int(step), args=args, force=True)

    def restore(self, abstract_state, step: int | None = None):
        """(state, data_state) of `step` (default: the latest), placed as `abstract_state` says.

        abstract_state: a pytree of jax.ShapeDtypeStruct with `sharding` set (the target
        layout; it may differ from the one the checkpoint was written with).
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        if step not in self.manager.all_steps():
            raise FileNotFoundError(
                f"no checkpoint for step {step} in {self.directory}; have {self.all_steps()}")
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(
                item=abstract_state,
                restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_state)),
            data=ocp.args.JsonRestore()))
        return out["state"], dict(out["data"] or {})

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_like(tree, shardings):
    """ShapeDtypeStructs of `tree` (arrays or structs) carrying the given shardings."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        tree, shardings)


def checkpoint_step(workdir: str, step: int | None = None) -> int:
    """The checkpoint step that `lm eval` / `lm sample` would load from an `lm train` workdir
    (the newest, or `step`); FileNotFoundError saying what is missing."""
    if not workdir:
        raise ValueError("--workdir=DIR (an `lm train` workdir) is required")
    if not os.path.isdir(workdir):
        raise FileNotFoundError(f"--workdir={workdir}: no such directory")
    if not os.path.isfile(os.path.join(workdir, "config.json")):
        raise FileNotFoundError(f"--workdir={workdir}: no config.json, so not an `lm train` workdir")
    directory = os.path.join(workdir, "checkpoints")
    steps = sorted(int(d) for d in (os.listdir(directory) if os.path.isdir(directory) else [])
                   if d.isdigit())
    if not steps:
        raise FileNotFoundError(f"--workdir={workdir}: no checkpoint in {directory} "
                                "(train first, or wait for the first checkpoint)")
    if step is not None and step not in steps:
        raise FileNotFoundError(f"--workdir={workdir}: no checkpoint for step {step}; have {steps}")
    return steps[-1] if step is None else step
