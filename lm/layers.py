"""Transformer layers: embeddings (token, learned, rotary), norms, MLPs, mixture of experts, block.

Shapes use the dimension letters of docs/DESIGN.md: B batch, T length, D d_model, F mlp, V vocab,
X experts, C expert capacity. Parameters are float32 with logical axis names; computation runs
in cfg.dtype.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from lm.attention import MultiHeadAttention, apply_rope, compute_dtype, param  # noqa: F401
from lm.config import ModelConfig
from lm.precision import dense, embed_lookup

RESIDUAL = ("batch", "length", "embed")


def residual_std(cfg: ModelConfig) -> float:
    """GPT-2 init for projections into the residual stream: 0.02 / sqrt(2 * layers)."""
    layers = cfg.num_layers + (cfg.encoder_layers if cfg.kind != "decoder" else 0)
    return 0.02 / math.sqrt(2 * layers)


class Embed(nn.Module):
    """Token embedding (Alg 1) and, tied, the unembedding (Alg 7)."""

    cfg: ModelConfig

    def setup(self):
        self.embedding = param(self, "embedding", (self.cfg.vocab_size, self.cfg.d_model),
                               ("vocab", "embed"))

    def __call__(self, tokens):
        # Cast, then gather from the whole table (lm.precision.embed_lookup says why).
        return embed_lookup(self.embedding, tokens, compute_dtype(self.cfg))

    def attend(self, x):
        """Logits float32 [B, T, V] = x E^T."""
        return dense("btd,vd->btv", x, self.embedding, x.dtype, jnp.float32)


class PositionEmbed(nn.Module):
    """Learned absolute positions (Alg 2): one vector per position 0..max_len-1."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, positions):
        """positions: contiguous start..start+T-1 ([T]); a slice of the table, not a gather."""
        std = 0.02 if self.cfg.init_scheme == "nanogpt" else 0.01  # nanoGPT: wpe ~ N(0, 0.02)
        table = param(self, "embedding", (self.cfg.max_len, self.cfg.d_model), ("length", "embed"),
                      std=std)
        if positions.shape[0] > self.cfg.max_len:
            raise ValueError(f"sequence length {positions.shape[0]} exceeds model.max_len="
                             f"{self.cfg.max_len} (learned positions)")
        rows = jax.lax.dynamic_slice_in_dim(table, positions[0], positions.shape[0], axis=0)
        return rows.astype(compute_dtype(self.cfg))


class LayerNorm(nn.Module):
    """Layer norm (Alg 6) or RMS norm (cfg.norm), statistics in float32."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        scale = param(self, "scale", (d,), ("embed",), init=nn.initializers.ones)
        bias = None
        if self.cfg.norm == "layernorm" and self.cfg.use_bias:
            bias = param(self, "bias", (d,), ("embed",), init=nn.initializers.zeros)
        norm = _norm if x.dtype == jnp.float32 else _norm_keeping_input
        return norm(x, scale, bias, self.cfg.norm == "layernorm", self.cfg.norm_eps)


def _norm(x, scale, bias, center: bool, eps: float):
    xf = x.astype(jnp.float32)
    if center:
        xf = xf - jnp.mean(xf, axis=-1, keepdims=True)
    y = xf * jax.lax.rsqrt(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) + eps) * scale
    return (y if bias is None else y + bias).astype(x.dtype)


# In bf16 the backward pass keeps only the norm's bf16 input and recomputes the f32 statistics
# (plain autodiff would keep x and y in f32: 8 bytes per channel instead of 2).
_norm_keeping_input = jax.checkpoint(_norm, static_argnums=(3, 4))


def _activate(cfg: ModelConfig, h):
    """GELU (tanh form, or exact erf for gelu_exact) on [..., F], or SwiGLU on [..., 2, F] (gate, up).
    In bf16 recomputed in the backward pass from h (already kept for the matmul before)."""
    fn = _activation if h.dtype == jnp.float32 else _activation_recomputed
    return fn(cfg.mlp, h)


def _activation(kind: str, h):
    if kind == "swiglu":
        return jax.nn.silu(h[..., 0, :]) * h[..., 1, :]
    return jax.nn.gelu(h, approximate=kind != "gelu_exact")


_activation_recomputed = jax.checkpoint(_activation, static_argnums=(0,))


class MLP(nn.Module):
    """Position-wise feed-forward: D -> F -> D with GELU, or SwiGLU (gate * up, then down)."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        dt = compute_dtype(cfg)
        d, f = cfg.d_model, cfg.ff_size
        if cfg.mlp == "swiglu":
            wi = param(self, "wi", (d, 2, f), ("embed", None, "mlp"))
            h = dense("btd,dnf->btnf", x, wi, dt)
            if cfg.use_bias:
                h = h + param(self, "bi", (2, f), (None, "mlp"), init=nn.initializers.zeros).astype(dt)
        else:
            wi = param(self, "wi", (d, f), ("embed", "mlp"))
            h = dense("btd,df->btf", x, wi, dt)
            if cfg.use_bias:
                h = h + param(self, "bi", (f,), ("mlp",), init=nn.initializers.zeros).astype(dt)
        h = nn.with_logical_constraint(_activate(cfg, h), ("batch", "length", "mlp"))
        wo = param(self, "wo", (f, d), ("mlp", "embed"), std=residual_std(cfg))
        y = dense("btf,fd->btd", h, wo, dt)
        if cfg.use_bias:
            y = y + param(self, "bo", (d,), ("embed",), init=nn.initializers.zeros).astype(dt)
        return y


def expert_capacity(cfg: ModelConfig, tokens_per_group: int) -> int:
    """Slots per expert per group (one sequence): ceil(k * T * capacity_factor / X)."""
    return max(1, math.ceil(cfg.moe_top_k * tokens_per_group * cfg.moe_capacity_factor
                            / cfg.num_experts))


def top_k_routing(probs, k: int, capacity: int):
    """Top-k routing with a capacity limit, per group (sequence).

    probs [B, T, X] router probabilities. Returns combine [B, T, X, C] (gate weight of token t in
    slot c of expert x, 0 where not routed) and dispatch (combine > 0). First choices of all
    tokens take slots before second choices; a choice finding its expert full is dropped, and
    a token with every choice dropped passes through on the residual only. Gates of the k
    choices are renormalised to sum to 1 (before dropping).
    """
    b, t, x = probs.shape
    gates, experts = jax.lax.top_k(probs, k)  # [B, T, k]
    gates = gates / jnp.sum(gates, axis=-1, keepdims=True)
    choice = jax.nn.one_hot(experts, x, dtype=jnp.int32)  # [B, T, k, X]
    # Slot of each choice in its expert: order by (choice rank, position).
    ranked = jnp.swapaxes(choice, 1, 2).reshape(b, k * t, x)
    slot = (jnp.cumsum(ranked, axis=1) - 1).reshape(b, k, t, x).swapaxes(1, 2)  # [B, T, k, X]
    kept = choice * (slot < capacity)
    slot_onehot = jax.nn.one_hot(jnp.sum(slot * kept, axis=-1), capacity, dtype=probs.dtype)
    kept_any = jnp.sum(kept, axis=-1).astype(probs.dtype)  # [B, T, k]
    combine = jnp.einsum("btk,btkx,btkc->btxc", gates * kept_any, kept.astype(probs.dtype),
                         slot_onehot)
    return combine, combine > 0


def load_balancing_loss(probs, k: int):
    """Switch-Transformer auxiliary loss X * sum_x f_x p_x (1 when balanced).

    f_x: fraction of the top-k choices sent to expert x, p_x: mean router probability.
    """
    x = probs.shape[-1]
    _, experts = jax.lax.top_k(probs, k)
    frac = jnp.mean(jax.nn.one_hot(experts, x, dtype=jnp.float32), axis=(0, 1, 2))
    return x * jnp.sum(frac * jnp.mean(probs, axis=(0, 1)))


class MoE(nn.Module):
    """Mixture-of-experts FFN: a router picks top-k of X expert MLPs per token, within capacity.

    Sows the unweighted load-balancing loss as ('losses', 'moe_aux'); the trainer multiplies
    the sum over layers by cfg.moe_aux_weight (see lm.models.aux_loss).
    """

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        dt = compute_dtype(cfg)
        d, f, nx = cfg.d_model, cfg.ff_size, cfg.num_experts
        router = param(self, "router", (d, nx), ("embed", "expert"))
        logits = jnp.einsum("btd,dx->btx", x.astype(jnp.float32), router)
        probs = jax.nn.softmax(logits, axis=-1)
        # Overwrite rather than append: a stale 'losses' collection passed back in is not summed.
        self.sow("losses", "moe_aux", load_balancing_loss(probs, cfg.moe_top_k),
                 init_fn=lambda: jnp.zeros((), jnp.float32), reduce_fn=lambda _, new: new)
        combine, dispatch = top_k_routing(probs, cfg.moe_top_k, expert_capacity(cfg, x.shape[1]))
        xin = jnp.einsum("btxc,btd->bxcd", dispatch.astype(dt), x)
        xin = nn.with_logical_constraint(xin, ("batch", "expert", None, "embed"))
        if cfg.mlp == "swiglu":
            wi = param(self, "wi", (nx, d, 2, f), ("expert", "embed", None, "mlp"))
            h = dense("bxcd,xdnf->bxcnf", xin, wi, dt)
        else:
            wi = param(self, "wi", (nx, d, f), ("expert", "embed", "mlp"))
            h = dense("bxcd,xdf->bxcf", xin, wi, dt)
        h = nn.with_logical_constraint(_activate(cfg, h), ("batch", "expert", None, "mlp"))
        wo = param(self, "wo", (nx, f, d), ("expert", "mlp", "embed"), std=residual_std(cfg))
        y = dense("bxcf,xfd->bxcd", h, wo, dt)
        return jnp.einsum("btxc,bxcd->btd", combine.astype(dt), y)


def _mix32(h):
    """MurmurHash3's 32-bit finaliser: every input bit flips each output bit with p ~ 1/2."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


class Dropout(nn.Module):
    """Inverted dropout whose mask is a hash of (element index, one random seed per call).

    Flax's nn.Dropout draws a threefry number per element, which on CPU costs about 4x more
    than the hash (a 10% slower step on nanoGPT's small config, bench/README.md). Dropout needs
    independent-looking bits, not cryptographic ones; the per-call seed still comes from the
    'dropout' RNG stream, so masks change with the step and the layer.
    """

    rate: float

    @nn.compact
    def __call__(self, x, deterministic: bool):
        if deterministic or self.rate == 0.0:
            return x
        seed = jax.random.bits(self.make_rng("dropout"), (), jnp.uint32)
        index = jax.lax.iota(jnp.uint32, x.size).reshape(x.shape)
        bits = _mix32(index * jnp.uint32(0x9E3779B1) + seed)
        keep = bits >= jnp.uint32(min(int(self.rate * 2.0 ** 32), 2 ** 32 - 1))
        return jnp.where(keep, x / (1.0 - self.rate), 0).astype(x.dtype)


class Block(nn.Module):
    """One transformer layer: self-attention, optional cross-attention, MLP or MoE.

    Pre-LN (default): x + f(norm(x)); post-LN: norm(x + f(x)); parallel residual (GPT-NeoX):
    x + attn(attn_norm(x)) + mlp(mlp_norm(x)), both branches reading the same x. The call signature
    (x, context, positions, segment ids...) -> x suits nn.scan (see lm.models).
    """

    cfg: ModelConfig
    causal: bool = True
    cross: bool = False
    moe: bool = False
    decode: bool = False
    deterministic: bool = True

    @nn.compact
    def __call__(self, x, context=None, positions=None, segment_ids=None, context_segment_ids=None):
        cfg = self.cfg

        def sublayer(name, fn, x):
            norm = LayerNorm(cfg, name=f"{name}_norm")
            y = fn(norm(x) if cfg.pre_norm else x)
            y = Dropout(cfg.dropout)(y, deterministic=self.deterministic)
            x = x + y
            x = x if cfg.pre_norm else norm(x)
            return nn.with_logical_constraint(x, RESIDUAL)

        attn = MultiHeadAttention(cfg, causal=self.causal, decode=self.decode, name="attn")
        if cfg.parallel_residual:  # validated: decoder-only, pre-LN, no MoE-specific change
            ffn = MoE(cfg, name="moe") if self.moe else MLP(cfg, name="mlp")
            a = attn(LayerNorm(cfg, name="attn_norm")(x), positions=positions,
                     q_segment_ids=segment_ids)
            m = ffn(LayerNorm(cfg, name="mlp_norm")(x))
            drop = Dropout(cfg.dropout)
            x = x + drop(a, deterministic=self.deterministic) + drop(m, deterministic=self.deterministic)
            return nn.with_logical_constraint(x, RESIDUAL)
        x = sublayer("attn", lambda h: attn(h, positions=positions, q_segment_ids=segment_ids), x)
        if self.cross:
            cross = MultiHeadAttention(cfg, causal=False, cross=True, decode=self.decode,
                                       name="cross")
            x = sublayer("cross", lambda h: cross(h, context, q_segment_ids=segment_ids,
                                                  kv_segment_ids=context_segment_ids), x)
        ffn = MoE(cfg, name="moe") if self.moe else MLP(cfg, name="mlp")
        return sublayer("mlp", ffn, x)
