"""Evaluation of a model on a split: exact sums over the split, divided once at the end.

    evaluate(params, model=, dataset=, config=, split=)   loss, bits/byte, perplexity, accuracy
    make_eval_step / run_eval                              what the training loop evaluates with

Losses are summed over every weighted target token (and the bytes those tokens stand for), so
per-token and per-byte figures are exact whatever the batch size or mesh. For DPO the sums are
per preference pair and the step reads the policy together with its frozen reference.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from lm import devices, objectives, sharding

LOG2 = math.log(2.0)


def eval_params(state: dict):
    """What the eval step reads: the params, or for DPO the policy with its reference."""
    if "ref_params" in state:
        return {"policy": state["params"], "ref": state["ref_params"]}
    return state["params"]


def make_eval_step(model, config, token_bytes, mesh, param_shardings):
    """jit(params, batch) -> sums of nll, weight, correct predictions and target bytes
    (DPO: jit({policy, ref}, batch) -> the DPO sums; param_shardings as eval_params gives)."""
    objective, masking = config.train.objective, bool(config.data.document_masking)
    token_bytes = np.asarray(token_bytes, np.float32)
    if objective == "dpo":
        t = config.train

        def dpo_eval(both, batch):
            return objectives.dpo_sums(model, both["policy"], both["ref"], batch, beta=float(t.dpo_beta),
                                       label_smoothing=float(t.dpo_label_smoothing))[0]
        return jax.jit(dpo_eval, in_shardings=(param_shardings, sharding.batch_sharding(mesh)),
                       out_shardings=sharding.replicated(mesh))

    def eval_fn(params, batch):
        logits, targets, weights, _ = objectives.forward(
            model, params, batch, objective=objective, document_masking=masking)
        sums = objectives.cross_entropy_sums(logits, targets, weights)
        del sums["z_sum"]
        sums["byte_sum"] = jnp.sum(jnp.asarray(token_bytes)[targets] * weights)
        return sums

    return jax.jit(eval_fn, in_shardings=(param_shardings, sharding.batch_sharding(mesh)),
                   out_shardings=sharding.replicated(mesh))


def eval_metrics(sums: dict) -> dict:
    """Per-token and per-byte figures from summed eval statistics (DPO: per-pair figures)."""
    if "dpo_sum" in sums:
        out = {k: float(v) for k, v in objectives.dpo_metrics(sums).items()}
        return {**out, "pairs": int(round(float(sums["pair_sum"])))}
    w = max(float(sums["weight_sum"]), 1e-9)
    loss = float(sums["nll_sum"]) / w
    return {
        "loss": loss,
        "bits_per_byte": float(sums["nll_sum"]) / LOG2 / max(float(sums["byte_sum"]), 1e-9),
        "perplexity": math.exp(min(loss, 700.0)),
        "accuracy": float(sums["correct_sum"]) / w,
        "tokens": int(round(float(sums["weight_sum"]))),
        "bytes": int(round(float(sums["byte_sum"]))),
    }


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
    return eval_metrics(jax.device_get(total))


def evaluate(params, *, model, dataset, config, split: str = "valid",
             max_batches: int | None = None) -> dict:
    """Loss (nats/token), bits_per_byte, perplexity, accuracy (and tokens, bytes counted)
    of `params` on a split: exact sums over the split, divided once at the end.

    Arguments as `lm.trainer.load_workdir` returns them. Params stay where they are: the mesh is the
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
