"""The optimizer: AdamW with a weight-decay mask, a warmup + decay schedule, clipping (Optax)."""

from __future__ import annotations

import jax
import optax

from lm.config import ConfigError

SCHEDULES = ("cosine", "linear", "constant")


def learning_rate_schedule(train_cfg) -> optax.Schedule:
    """Linear warmup from 0 to the peak over warmup_steps, then decay to min_lr_ratio * peak
    at the last step: cosine, linear, or constant (no decay)."""
    peak, steps = float(train_cfg.learning_rate), int(train_cfg.steps)
    warmup = min(int(train_cfg.warmup_steps), steps)
    floor = peak * float(train_cfg.min_lr_ratio)
    kind = train_cfg.schedule
    if kind not in SCHEDULES:
        raise ConfigError(f"train.schedule: {kind!r} is not one of {SCHEDULES}")
    decay_steps = max(steps - warmup, 1)
    if kind == "cosine":
        decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=floor / peak if peak else 0.0)
    elif kind == "linear":
        decay = optax.linear_schedule(peak, floor, decay_steps)
    else:
        decay = optax.constant_schedule(peak)
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def _is_embedding(path) -> bool:
    names = [str(getattr(k, "key", getattr(k, "name", k))).lower() for k in path]
    return any("embed" in n or n in ("wte", "wpe") for n in names)


def decay_mask(params, logical_specs=None, *, decay_embeddings: bool = False):
    """True where weight decay applies: matrices (2+ axes besides a scanned `layers` axis).

    Norm scales and biases are vectors and embeddings (any path named *embed*) are lookup
    tables; none of them is decayed unless decay_embeddings is set, which decays everything.
    `logical_specs` (the params' logical PartitionSpecs) lets a scanned stack's leading
    `layers` axis not count as a matrix dimension.
    """
    if decay_embeddings:
        return jax.tree.map(lambda _: True, params)
    if logical_specs is None:
        logical_specs = jax.tree.map(lambda _: None, params)

    def one(path, value, spec):
        names = tuple(spec) if spec is not None else (None,) * value.ndim
        ndim = sum(1 for n in names if n != "layers") if len(names) == value.ndim else value.ndim
        return ndim >= 2 and not _is_embedding(path)

    return jax.tree_util.tree_map_with_path(one, params, logical_specs)


def make_optimizer(train_cfg, params, logical_specs=None) -> optax.GradientTransformation:
    """Global-norm clipping, then AdamW (decoupled weight decay through the mask)."""
    mask = decay_mask(params, logical_specs, decay_embeddings=bool(train_cfg.decay_embeddings))
    chain = []
    if train_cfg.grad_clip and train_cfg.grad_clip > 0:
        chain.append(optax.clip_by_global_norm(float(train_cfg.grad_clip)))
    chain.append(optax.adamw(
        learning_rate_schedule(train_cfg), b1=float(train_cfg.b1), b2=float(train_cfg.b2),
        eps=float(train_cfg.eps), weight_decay=float(train_cfg.weight_decay), mask=mask))
    return optax.chain(*chain)
