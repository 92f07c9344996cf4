"""The optimizer: AdamW with a weight-decay mask, a warmup + decay schedule, clipping (Optax)."""

from __future__ import annotations

import jax
import optax

from lm.config import ConfigError

SCHEDULES = ("cosine", "linear", "constant")


def learning_rate_schedule(train_cfg) -> optax.Schedule:
    """Linear warmup to the peak over warmup_steps (step 0 already takes peak / warmup, so no
    step is wasted at 0), then decay to min_lr_ratio * peak at the last step: cosine, linear,
    or constant (no decay)."""
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
    ramp = optax.linear_schedule(peak / warmup, peak, warmup - 1) if warmup > 1 else \
        optax.constant_schedule(peak)
    return optax.join_schedules([ramp, decay], [warmup])


DECAY_MASKS = ("matrices", "nanogpt", "all")


def decay_mask(params, logical_specs=None, *, decay_embeddings: bool = False, kind: str = "matrices"):
    """True where weight decay applies: the weight matrices of the blocks (kind 'matrices').

    With the params' logical PartitionSpecs a weight matrix is a param with an `embed` axis
    and at least one other named axis (a scanned stack's `layers` axis does not count): that
    excludes norm scales and biases, however many axes a fused bias has. Without specs:
    2+ axes and no 'bias' in the name. Embeddings (any path named *embed*, which includes an
    untied unembedding) are lookup tables and not decayed either, unless decay_embeddings
    is set or kind is 'all', which decays everything. kind 'nanogpt' is nanoGPT's
    configure_optimizers: every param of 2+ axes (matrices and embeddings), no norms or biases.
    """
    if kind not in DECAY_MASKS:
        raise ConfigError(f"train.decay_mask: {kind!r} is not one of {DECAY_MASKS}")
    if decay_embeddings or kind == "all":
        return jax.tree.map(lambda _: True, params)
    if logical_specs is None:
        logical_specs = jax.tree.map(lambda _: None, params)

    def one(path, value, spec):
        names = [str(getattr(k, "key", getattr(k, "name", k))).lower() for k in path]
        embedding = any("embed" in n or n in ("wte", "wpe") for n in names)
        if kind == "nanogpt" and embedding:
            return value.ndim >= 2
        if embedding:
            return False
        if spec is None or len(tuple(spec)) != value.ndim:
            return value.ndim >= 2 and not any("bias" in n for n in names)
        axes = [a for a in tuple(spec) if a is not None and a != "layers"]
        return "embed" in axes and len(axes) >= 2

    return jax.tree_util.tree_map_with_path(one, params, logical_specs)


def make_optimizer(train_cfg, params, logical_specs=None) -> optax.GradientTransformation:
    """Global-norm clipping, then AdamW (decoupled weight decay through the mask)."""
    mask = decay_mask(params, logical_specs, decay_embeddings=bool(train_cfg.decay_embeddings),
                      kind=str(train_cfg.get("decay_mask", "matrices")))
    chain = []
    if train_cfg.grad_clip and train_cfg.grad_clip > 0:
        chain.append(optax.clip_by_global_norm(float(train_cfg.grad_clip)))
    chain.append(optax.adamw(
        learning_rate_schedule(train_cfg), b1=float(train_cfg.b1), b2=float(train_cfg.b2),
        eps=float(train_cfg.eps), weight_decay=float(train_cfg.weight_decay), mask=mask))
    return optax.chain(*chain)
