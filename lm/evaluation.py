"""Evaluation of a model on a split: exact sums over the split, divided once at the end.

    evaluate(params, model=, dataset=, config=, split=)   loss, bits/byte, perplexity, accuracy
    make_eval_step / run_eval                              what the training loop evaluates with

The objective (lm/objectives) says what is summed: every weighted target token and the bytes
those tokens stand for (per-token and per-byte figures are exact whatever the batch size or
mesh), or preference pairs, where the step reads the policy together with its frozen reference
(lm.runs.eval_params).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lm import devices, objectives, sharding
from lm.objectives.base import Context


def make_eval_step(model, config, token_bytes, mesh, param_shardings):
    """jit(params, batch) -> the objective's eval sums (for an objective with a frozen reference
    the params are {policy, ref}; param_shardings as lm.runs.eval_params gives)."""
    objective = objectives.get(config.train.objective)
    ctx = Context(model, config.train, bool(config.data.document_masking),
                  np.asarray(token_bytes, np.float32))

    def eval_fn(params, batch):
        if objective.keeps_reference:
            return objective.eval_sums(ctx, params["policy"], params["ref"], batch)
        return objective.eval_sums(ctx, params, None, batch)

    return jax.jit(eval_fn, in_shardings=(param_shardings, sharding.batch_sharding(mesh)),
                   out_shardings=sharding.replicated(mesh))


def eval_batch_size(config, mesh) -> int:
    """The training micro-batch (it fits in memory), rounded to split over mesh and processes."""
    unit = sharding.batch_axis_size(mesh)  # a multiple of the process slices
    micro = config.train.batch_size // max(config.train.grad_accum, 1)
    return max(unit, micro // unit * unit)


def run_eval(eval_step, params, dataset, config, mesh, split: str, max_batches: int) -> dict:
    if split not in dataset.splits:
        raise ValueError(f"split {split!r} is not one of the dataset's splits {list(dataset.splits)}")
    batches = dataset.eval_batches(
        split, eval_batch_size(config, mesh), max_batches=max_batches,
        **sharding.feed_slice(mesh))
    total = None
    # Several CPU devices: one eval step in flight, else its all-reduce can starve (lm/devices.py).
    one_at_a_time = devices.wait_each_step(mesh)
    with sharding.activate(mesh):
        for local in batches:
            sums = eval_step(params, sharding.global_batch(local, mesh))
            total = sums if total is None else jax.tree.map(jnp.add, total, sums)
            if one_at_a_time:
                jax.block_until_ready(total)
    if total is None:
        raise ValueError(f"split {split!r} gave no eval batches")
    return objectives.get(config.train.objective).eval_metrics(jax.device_get(total), config.train)


def evaluate(params, *, model, dataset, config, split: str = "valid",
             max_batches: int | None = None) -> dict:
    """Loss (nats/token), bits_per_byte, perplexity, accuracy (and tokens, bytes counted)
    of `params` on a split: exact sums over the split, divided once at the end.

    Arguments as `lm.runs.load_workdir` returns them. Params stay where they are: the mesh is the
    one they are sharded over. max_batches None means config.train.eval_batches, 0 the
    whole split.
    """
    if max_batches is None:
        max_batches = int(config.train.eval_batches)
    leaf = jax.tree.leaves(params)[0]
    mesh = getattr(getattr(leaf, "sharding", None), "mesh", None)
    if not isinstance(mesh, jax.sharding.Mesh):  # plain arrays: one device
        mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1})
        params = jax.device_put(params, sharding.replicated(mesh))
    param_shardings = jax.tree.map(lambda x: x.sharding, params)
    step = make_eval_step(model, config, dataset.tokenizer.token_bytes, mesh, param_shardings)
    return run_eval(step, params, dataset, config, mesh, split, max_batches)
