"""The optimizer: AdamW with a weight-decay mask, a warmup + decay schedule, clipping (Optax)."""

from __future__ import annotations

import jax
import optax

from lm.config import ConfigError

SCHEDULES = ("cosine", "linear", "constant", "wsd")
OPTIMIZERS = ("adamw", "muon")


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
    elif kind == "wsd":
        cool = min(max(int(round(float(train_cfg.cooldown_fraction) * steps)), 1), decay_steps)
        decay = optax.join_schedules([optax.constant_schedule(peak),
                                      optax.linear_schedule(peak, floor, cool)], [decay_steps - cool])
    else:
        decay = optax.constant_schedule(peak)
    if warmup == 0:
        return decay
    ramp = optax.linear_schedule(peak / warmup, peak, warmup - 1) if warmup > 1 else \
        optax.constant_schedule(peak)
    return optax.join_schedules([ramp, decay], [warmup])


DECAY_MASKS = ("matrices", "nanogpt", "all")


def decay_mask(params, logical_specs=None, *, kind: str = "matrices"):
    """True where weight decay applies: the weight matrices of the blocks (kind 'matrices').

    With the params' logical PartitionSpecs a weight matrix is a param with an `embed` axis
    and at least one other named axis (a scanned stack's `layers` axis does not count): that
    excludes norm scales and biases, however many axes a fused bias has. Without specs:
    2+ axes and no 'bias' in the name. Embeddings (any path named *embed*, which includes an
    untied unembedding) are lookup tables and not decayed either, unless kind is 'all',
    which decays everything. kind 'nanogpt' is nanoGPT's
    configure_optimizers: every param of 2+ axes (matrices and embeddings), no norms or biases.
    """
    if kind not in DECAY_MASKS:
        raise ConfigError(f"train.decay_mask: {kind!r} is not one of {DECAY_MASKS}")
    if kind == "all":
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


# Logical axes that are neither a matrix's input nor its output: Muon orthogonalises per slice.
_BATCH_AXES = (None, "layers", "expert")


def muon_dimensions(params, logical_specs):
    """optax.contrib.MuonDimensionNumbers for the weight matrices of the blocks, None elsewhere.

    A block weight (decay_mask's 'matrices' rule) reads from the residual stream when its first
    named axis is 'embed' (qkv [D, 3, H, E], mlp/wi): reduction = embed, output = its other
    named axes. Otherwise it writes to it (attn/out [H, E, D], mlp/wo): output = embed. Unnamed
    axes (the stacked q/k/v or gate/up), 'layers' and 'expert' are batch axes: orthogonalised
    one slice at a time, as modded-nanogpt does for q, k and v.
    """
    from optax.contrib import MuonDimensionNumbers

    matrices = decay_mask(params, logical_specs)

    def one(is_matrix, spec):
        if not is_matrix or spec is None:
            return None
        named = [i for i, a in enumerate(tuple(spec)) if a not in _BATCH_AXES]
        embed = [i for i in named if tuple(spec)[i] == "embed"]
        rest = [i for i in named if i not in embed]
        if not embed or not rest:
            return None
        if named[0] in embed:
            return MuonDimensionNumbers(reduction_axis=tuple(embed), output_axis=tuple(rest))
        return MuonDimensionNumbers(reduction_axis=tuple(rest), output_axis=tuple(embed))

    return jax.tree.map(one, matrices, logical_specs, is_leaf=lambda x: x is None or isinstance(x, bool))


def make_optimizer(train_cfg, params, logical_specs=None) -> optax.GradientTransformation:
    """Global-norm clipping, then AdamW (decoupled weight decay through the mask), or Muon
    (optax.contrib.muon) on the block matrices with AdamW on everything else."""
    mask = decay_mask(params, logical_specs, kind=str(train_cfg.decay_mask))
    kind = str(train_cfg.optimizer)
    if kind not in OPTIMIZERS:
        raise ConfigError(f"train.optimizer: {kind!r} is not one of {OPTIMIZERS}")
    chain = []
    if train_cfg.grad_clip and train_cfg.grad_clip > 0:
        chain.append(optax.clip_by_global_norm(float(train_cfg.grad_clip)))
    lr = learning_rate_schedule(train_cfg)
    wd = float(train_cfg.weight_decay)
    adamw = optax.adamw(lr, b1=float(train_cfg.b1), b2=float(train_cfg.b2),
                        eps=float(train_cfg.eps), weight_decay=wd, mask=mask)
    if kind == "adamw":
        chain.append(adamw)
        return optax.chain(*chain)
    if logical_specs is None:
        raise ConfigError("train.optimizer=muon needs the params' logical axis names")
    from optax.contrib import muon

    dims = muon_dimensions(params, logical_specs)
    ratio = float(train_cfg.muon_learning_rate) / float(train_cfg.learning_rate)
    labels = jax.tree.map(lambda d: "muon" if d is not None else "adamw", dims,
                          is_leaf=lambda x: x is None or not isinstance(x, (dict, list)))
    # Muon's own weight decay (lr-coupled, as AdamW's) on every block matrix; AdamW (with its
    # mask) on the rest: embeddings, norms, biases.
    chain.append(optax.multi_transform(
        {"muon": muon(lambda step: lr(step) * ratio, beta=float(train_cfg.muon_momentum),
                      weight_decay=wd, muon_weight_dimension_numbers=dims),
         "adamw": adamw}, labels))
    return optax.chain(*chain)
