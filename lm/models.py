"""Language models: decoder-only (GPT, Alg 10) and encoder-decoder (T5/BART-style, Alg 8).

Both are Flax Linen modules used functionally (`init` / `apply`):
    DecoderLM:        apply({"params": p}, tokens [B,T], segment_ids=None) -> logits [B,T,V]
    EncoderDecoderLM: apply({"params": p}, src [B,S], tgt [B,T], src_segment_ids=None,
                            tgt_segment_ids=None) -> logits [B,T,V]
(deterministic=False turns dropout on, decode=True the KV cache of lm.sampling). Layer stacks either loop over layers or run under `nn.scan` (cfg.scan_layers; the
stacked parameters get the logical axis 'layers'), each layer optionally rematerialised
(cfg.remat: none | full | dots). Both switches leave the numbers unchanged.

With a mixture of experts in every n-th layer (cfg.moe_every = n), layer i is MoE iff
(i + 1) % n == 0; the scanned unit is then a group of n layers (n - 1 dense, the last MoE).
When n does not divide the number of layers the stack falls back to a plain loop.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from lm.attention import param
from lm.config import ConfigError, ModelConfig
from lm.precision import MATMUL, dense
from lm.layers import RESIDUAL, Block, Dropout, Embed, LayerNorm, PositionEmbed

# 'dots' saves the weight matmuls' outputs (lm.precision.dense tags them MATMUL: in bf16 they
# are a custom_vjp no dot-matching policy sees into), never the [.., T, T] attention scores.
REMAT_POLICIES = {"full": None, "dots": jax.checkpoint_policies.save_from_both_policies(
    jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
    jax.checkpoint_policies.save_only_these_names(MATMUL))}


def _block_class(cfg: ModelConfig):
    if cfg.remat == "none":
        return Block
    # Inside nn.scan the loop already keeps XLA from merging recomputation with the forward.
    return nn.remat(Block, policy=REMAT_POLICIES[cfg.remat], prevent_cse=not cfg.scan_layers)


class _Group(nn.Module):
    """`size` consecutive layers, the last one MoE if `moe_last`: the unit of nn.scan."""

    cfg: ModelConfig
    causal: bool
    cross: bool
    size: int
    moe_last: bool
    decode: bool
    deterministic: bool

    @nn.compact
    def __call__(self, x, context, positions, segment_ids, context_segment_ids):
        block = _block_class(self.cfg)
        for i in range(self.size):
            x = block(self.cfg, causal=self.causal, cross=self.cross,
                      moe=self.moe_last and i == self.size - 1, decode=self.decode,
                      deterministic=self.deterministic, name=f"block_{i}")(
                x, context, positions, segment_ids, context_segment_ids)
        return x, None


class Stack(nn.Module):
    """num_layers transformer blocks (encoder: non-causal; decoder: causal, optional cross-attn)."""

    cfg: ModelConfig
    num_layers: int
    causal: bool = True
    cross: bool = False

    @nn.compact
    def __call__(self, x, context=None, positions=None, segment_ids=None,
                 context_segment_ids=None, *, deterministic=True, decode=False):
        cfg = self.cfg
        every = cfg.moe_every
        group = every or 1
        args = (context, positions, segment_ids, context_segment_ids)
        if cfg.scan_layers and self.num_layers % group == 0:
            scanned = nn.scan(
                _Group,
                variable_axes={"params": 0, "cache": 0, "losses": 0, "intermediates": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=(nn.broadcast,) * len(args),
                length=self.num_layers // group,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )
            x, _ = scanned(cfg, self.causal, self.cross, group, bool(every), decode,
                           deterministic, name="layers")(x, *args)
            return x
        block = _block_class(cfg)
        for i in range(self.num_layers):
            x = block(cfg, causal=self.causal, cross=self.cross,
                      moe=bool(every) and (i + 1) % every == 0, decode=decode,
                      deterministic=deterministic, name=f"layer_{i}")(x, *args)
        return x


class Positions(nn.Module):
    """Positions 0..T-1; when decoding, continuing from a counter kept in the 'cache' collection."""

    @nn.compact
    def __call__(self, length: int, decode: bool):
        if not decode:
            return jnp.arange(length)
        initialising = not self.has_variable("cache", "position")
        counter = self.variable("cache", "position", lambda: jnp.array(0, jnp.int32))
        start = counter.value
        if not initialising:
            counter.value = start + length
        return start + jnp.arange(length)


class _LM(nn.Module):
    """Shared pieces: token/position embedding, final norm, (un)embedding."""

    cfg: ModelConfig

    def _setup_common(self):
        cfg = self.cfg
        self.embed = Embed(cfg)
        if cfg.position == "learned":
            self.pos_embed = PositionEmbed(cfg)
        if not cfg.tie_embeddings:
            self.unembed = param(self, "unembed", (cfg.d_model, cfg.vocab_size), ("embed", "vocab"))
        self.positions = Positions()
        self.dropout = Dropout(cfg.dropout)

    def _embed(self, tokens, positions, deterministic):
        x = self.embed(tokens)
        if self.cfg.position == "learned":
            x = x + self.pos_embed(positions)
        x = self.dropout(x, deterministic=deterministic)
        return nn.with_logical_constraint(x, RESIDUAL)

    def _logits(self, x, norm):
        if norm is not None:
            x = norm(x)
        if self.cfg.tie_embeddings:
            logits = self.embed.attend(x)
        else:
            logits = dense("btd,dv->btv", x, self.unembed, x.dtype, jnp.float32)
        return nn.with_logical_constraint(logits, ("batch", "length", "vocab"))


class DecoderLM(_LM):
    """GPT-style decoder-only transformer (Alg 10): tokens [B, T] -> logits float32 [B, T, V]."""

    def setup(self):
        cfg = self.cfg
        self._setup_common()
        self.decoder = Stack(cfg, cfg.num_layers, causal=True)
        self.final_norm = LayerNorm(cfg) if cfg.pre_norm else None

    def __call__(self, tokens, segment_ids=None, deterministic=True, decode=False,
                 return_hidden=False):
        """Logits f32 [B, T, V]; with return_hidden, the final-normed hidden states [B, T, D]
        instead (lm.chunked_loss applies the head a chunk at a time)."""
        positions = self.positions(tokens.shape[1], decode)
        x = self._embed(tokens, positions, deterministic)
        x = self.decoder(x, None, positions, None if decode else segment_ids,
                         deterministic=deterministic, decode=decode)
        if return_hidden:
            return x if self.final_norm is None else self.final_norm(x)
        return self._logits(x, self.final_norm)


class EncoderDecoderLM(_LM):
    """Encoder-decoder transformer (Alg 8) with shared token embeddings.

    When decoding, the first `decode` call must pass `encoded`: each layer's cross-attention then
    caches the projected source keys/values (and src_segment_ids); later calls may pass
    encoded=None to reuse them.
    """

    def setup(self):
        cfg = self.cfg
        self._setup_common()
        self.encoder = Stack(cfg, cfg.encoder_layers, causal=False)
        self.decoder = Stack(cfg, cfg.num_layers, causal=True, cross=True)
        self.encoder_norm = LayerNorm(cfg) if cfg.pre_norm else None
        self.decoder_norm = LayerNorm(cfg) if cfg.pre_norm else None

    def encode(self, src, src_segment_ids=None, deterministic=True):
        """src [B, S] -> encoded [B, S, D]."""
        positions = jnp.arange(src.shape[1])
        x = self._embed(src, positions, deterministic)
        x = self.encoder(x, None, positions, src_segment_ids, deterministic=deterministic)
        return x if self.encoder_norm is None else self.encoder_norm(x)

    def decode(self, encoded, src_segment_ids, tgt, tgt_segment_ids=None, deterministic=True,
               decode=False):
        """(encoded [B, S, D], tgt [B, T]) -> logits float32 [B, T, V]."""
        positions = self.positions(tgt.shape[1], decode)
        x = self._embed(tgt, positions, deterministic)
        x = self.decoder(x, encoded, positions, None if decode else tgt_segment_ids,
                         src_segment_ids, deterministic=deterministic, decode=decode)
        return self._logits(x, self.decoder_norm)

    def __call__(self, src, tgt, src_segment_ids=None, tgt_segment_ids=None, deterministic=True,
                 decode=False):
        encoded = self.encode(src, src_segment_ids, deterministic)
        return self.decode(encoded, src_segment_ids, tgt, tgt_segment_ids, deterministic, decode)


def build_model(cfg: ModelConfig) -> nn.Module:
    """DecoderLM or EncoderDecoderLM for cfg.kind."""
    if not isinstance(cfg, ModelConfig):
        raise ConfigError(f"build_model needs a lm.config.ModelConfig, got {type(cfg).__name__} "
                          "(use lm.config.model_config(config))")
    if cfg.kind == "decoder":
        return DecoderLM(cfg)
    if cfg.kind == "encoder_decoder":
        return EncoderDecoderLM(cfg)
    raise ConfigError(f"model.kind: {cfg.kind!r} is not a known model kind")


def _dummy_inputs(cfg: ModelConfig, batch: int, length: int, src_len: int | None = None):
    tgt = jnp.zeros((batch, length), jnp.int32)
    if cfg.kind == "decoder":
        return (tgt,)
    return (jnp.zeros((batch, src_len or length), jnp.int32), tgt)


def init_cache(model: nn.Module, batch_size: int, max_len: int, src_len: int | None = None):
    """An empty KV cache (zeros) for decoding up to max_len target tokens.

    Encoder-decoder: src_len is the source length the cross-attention cache holds (default
    cfg.max_len); the first decode step must pass `encoded` of that length.
    """
    cfg = model.cfg
    if max_len > cfg.max_len and cfg.position == "learned":
        raise ValueError(f"init_cache: max_len={max_len} exceeds model.max_len={cfg.max_len} "
                         "(learned positions)")
    inputs = _dummy_inputs(cfg, batch_size, max_len, src_len or cfg.max_len)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *inputs, decode=True))
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes["cache"])


def aux_loss(mutated) -> jax.Array:
    """Sum of everything sown in the 'losses' collection (0.0 when absent).

    The MoE layers sow their *unweighted* load-balancing loss (each about 1 when balanced);
    the caller (the trainer) adds cfg.moe_aux_weight * aux_loss(mutated) to its objective.
    """
    losses = mutated.get("losses", {}) if hasattr(mutated, "get") else {}
    leaves = jax.tree.leaves(losses)
    if not leaves:
        return jnp.zeros((), jnp.float32)
    return sum(jnp.sum(leaf).astype(jnp.float32) for leaf in leaves)


@functools.lru_cache(maxsize=64)
def _param_shapes(cfg: ModelConfig):
    """{path: shape} of the initialised parameters, via jax.eval_shape (no compute)."""
    model = build_model(cfg)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *_dummy_inputs(cfg, 1, 1)))
    flat = jax.tree_util.tree_flatten_with_path(nn.unbox(shapes["params"]))[0]
    return {jax.tree_util.keystr(path): tuple(leaf.shape) for path, leaf in flat}


def count_params(cfg: ModelConfig) -> int:
    """Exact number of parameters of the initialised model."""
    return int(sum(math.prod(s) for s in _param_shapes(cfg).values()))


def nonembed_params(cfg: ModelConfig) -> float:
    """N of the scaling laws: parameters active per token, without token/position embeddings
    and the unembedding (of each MoE layer's experts only top_k of num_experts count)."""
    n = 0.0
    for path, shape in _param_shapes(cfg).items():
        size = math.prod(shape)
        if "'embed'" in path or "'pos_embed'" in path or "'unembed'" in path:
            continue
        if "'moe'" in path and ("'wi'" in path or "'wo'" in path):
            size *= cfg.moe_top_k / cfg.num_experts
        n += size
    return n


def flops_per_token(cfg: ModelConfig, seq_len: int | None = None) -> float:
    """Training FLOPs per token: 6 N + 12 L T d + 6 D V.

    N: non-embedding parameters active per token (token/position embeddings and the unembedding
    excluded; of each MoE layer's experts only top_k of num_experts count). L: attention layers
    (encoder-decoder: encoder self + decoder self + decoder cross). T: seq_len (default
    cfg.max_len); d = heads * head_dim. 6 D V: the unembedding matmul (tied or not). The
    attention term is the softmax convention for every kernel.
    """
    t = seq_len or cfg.max_len
    n = nonembed_params(cfg)
    layers = cfg.num_layers if cfg.kind == "decoder" else cfg.encoder_layers + 2 * cfg.num_layers
    return 6.0 * n + 12.0 * layers * t * cfg.num_heads * cfg.head_size + 6.0 * cfg.d_model * cfg.vocab_size


__all__ = ["DecoderLM", "EncoderDecoderLM", "Stack", "build_model", "init_cache", "aux_loss",
           "count_params", "flops_per_token", "nonembed_params"]
