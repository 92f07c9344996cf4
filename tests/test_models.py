"""Decoder-only and encoder-decoder models: causality, masks, GQA, KV cache, scan/remat, MoE."""

import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm import layers, models
from lm.config import ConfigError, ModelConfig

TINY = dict(vocab_size=50, max_len=16, d_model=32, num_layers=2, num_heads=4)


def tiny(**kw) -> ModelConfig:
    return ModelConfig(**{**TINY, **kw})


def tokens(seed, shape=(2, 16)):
    return np.random.default_rng(seed).integers(0, 50, shape).astype(np.int32)


def init(cfg, seed=0):
    """Model and random parameters drawn with numpy into the init shapes.

    Compiling `model.init` (random draws for every parameter) costs seconds of XLA time on CPU;
    the tests only need fixed parameters of the right structure.
    """
    model = models.build_model(cfg)
    x = tokens(0, (2, cfg.max_len))
    inputs = (x,) if cfg.kind == "decoder" else (x, x)
    shapes = nn.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), *inputs))["params"]
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        x = 0.1 * rng.standard_normal(leaf.shape)
        return (x + 1.0 if "scale" in jax.tree_util.keystr(path) else x).astype(np.float32)

    return model, jax.tree_util.tree_map_with_path(draw, shapes)


def forward(model):
    return jax.jit(lambda p, *a, **kw: model.apply({"params": p}, *a, **kw))


@pytest.mark.parametrize("kernel", ["exp", "linear"])
def test_decoder_is_causal(kernel):
    model, params = init(tiny(kernel=kernel, position="rope"))
    a = tokens(1)
    b = a.copy()
    b[:, 8:] = tokens(2)[:, 8:]
    run = forward(model)
    la, lb = run(params, a), run(params, b)
    np.testing.assert_allclose(la[:, :8], lb[:, :8], atol=1e-5)
    assert not np.allclose(la[:, 8:], lb[:, 8:], atol=1e-3)


def test_encoder_decoder_decoder_is_causal_and_reads_the_source():
    model, params = init(tiny(kind="encoder_decoder"))
    src, tgt = tokens(1), tokens(2)
    tgt2 = tgt.copy()
    tgt2[:, 8:] = tokens(3)[:, 8:]
    run = forward(model)
    base = run(params, src, tgt)
    np.testing.assert_allclose(base[:, :8], run(params, src, tgt2)[:, :8], atol=1e-5)
    assert not np.allclose(base[:, 8:], run(params, src, tgt2)[:, 8:], atol=1e-3)
    # every target position depends on the source, including the first
    src2 = src.copy()
    src2[:, -1] = (src[:, -1] + 1) % 50
    other = run(params, src2, tgt)
    assert np.all(np.abs(np.asarray(other - base)).max(axis=-1) > 1e-5)


@pytest.mark.parametrize("kernel,position", [("exp", "rope"), ("linear", "none")])
def test_segment_ids_isolate_documents(kernel, position):
    """Packed [doc A | doc B]: B's logits ignore A and equal B run on its own.

    (RoPE scores are shift-invariant for the exp kernel only, so linear runs without positions.)
    """
    model, params = init(tiny(kernel=kernel, position=position))
    run = forward(model)
    seg = np.array([[1] * 8 + [2] * 8] * 2, np.int32)
    packed = tokens(4)
    other_a = packed.copy()
    other_a[:, :8] = tokens(5)[:, :8]
    base = run(params, packed, segment_ids=seg)
    np.testing.assert_allclose(base[:, 8:], run(params, other_a, segment_ids=seg)[:, 8:], atol=1e-5)
    alone = run(params, packed[:, 8:])
    np.testing.assert_allclose(base[:, 8:], alone, atol=1e-4)
    assert not np.allclose(run(params, packed)[:, 8:], alone, atol=1e-3)  # no mask: A leaks in


def test_grouped_query_with_repeated_weights_equals_multi_head():
    """K = 2 kv heads shared by H = 4 query heads == plain MHA whose k/v heads are copies."""
    gqa, p_gqa = init(tiny(num_kv_heads=2))
    mha, p_mha = init(tiny())
    for name in ("layer_0", "layer_1"):
        src, dst = p_gqa["decoder"][name]["attn"], p_mha["decoder"][name]["attn"]
        kv = np.repeat(src["kv"], 2, axis=2)  # [D, 2, K, E] -> [D, 2, H, E]
        dst["qkv"] = np.concatenate([src["query"][:, None], kv], axis=1)
        kvb = np.repeat(src["kv_bias"], 2, axis=1)
        dst["qkv_bias"] = np.concatenate([src["query_bias"][None], kvb], axis=0)
        for key in ("out", "out_bias"):
            dst[key] = src[key]
        for sub in ("attn_norm", "mlp_norm", "mlp"):
            p_mha["decoder"][name][sub] = p_gqa["decoder"][name][sub]
    for key in ("embed", "pos_embed", "final_norm"):
        p_mha[key] = p_gqa[key]
    x = tokens(6)
    np.testing.assert_allclose(forward(gqa)(p_gqa, x), forward(mha)(p_mha, x), atol=1e-5)


def _loop_to_scan(params, num_layers, group):
    """Stack loop parameters layer_i into the scanned layout layers/block_{i % group}."""
    out = {k: v for k, v in params.items() if k != "decoder"}
    stack = {}
    for j in range(group):
        layers_j = [params["decoder"][f"layer_{i}"] for i in range(j, num_layers, group)]
        stack[f"block_{j}"] = jax.tree.map(lambda *xs: np.stack(xs), *layers_j)
    out["decoder"] = {"layers": stack}
    return out


def _loss_and_grad(model, params):
    x = tokens(7)
    return jax.jit(jax.value_and_grad(lambda p: jnp.mean(model.apply({"params": p}, x) ** 2)))(
        params)


@functools.lru_cache(maxsize=None)
def _baseline(moe_every):
    """Loss and gradients of the plain loop model without remat (shared by variants)."""
    cfg = tiny(moe_every=moe_every, num_experts=4)
    model, params = init(cfg)
    return cfg, params, _loss_and_grad(model, params)


@pytest.mark.parametrize("variant", [
    dict(scan_layers=True, remat="full"),
    dict(remat="dots"),
    dict(scan_layers=True, remat="dots", moe_every=2),  # scans one group of 2 layers
])
def test_scan_and_remat_give_the_same_numbers(variant):
    base_cfg, p_base, (l0, g0) = _baseline(variant.get("moe_every", 0))
    cfg = dataclasses.replace(base_cfg, **variant)
    model, p_model = init(cfg)
    if cfg.scan_layers:
        p_base_as_model = _loop_to_scan(p_base, cfg.num_layers, cfg.moe_every or 1)
        assert jax.tree.structure(p_base_as_model) == jax.tree.structure(p_model)
    else:
        p_base_as_model = p_base
    l1, g1 = _loss_and_grad(model, p_base_as_model)
    np.testing.assert_allclose(l0, l1, rtol=1e-5)
    if cfg.scan_layers:
        g0 = _loop_to_scan(g0, cfg.num_layers, cfg.moe_every or 1)
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kw", [
    dict(),
    dict(kind="encoder_decoder", num_encoder_layers=3, tie_embeddings=False, mlp="swiglu"),
    dict(scan_layers=True, moe_every=1, num_kv_heads=1, norm="rmsnorm", position="rope"),
    dict(kernel="performer", use_bias=False, head_dim=16),
])
def test_count_params_equals_pytree_size_and_params_are_named(kw):
    cfg = tiny(**kw)
    model = models.build_model(cfg)
    inputs = (tokens(0),) if cfg.kind == "decoder" else (tokens(0), tokens(1))
    boxed = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *inputs))["params"]
    size = sum(math.prod(x.shape) for x in jax.tree.leaves(boxed))
    assert models.count_params(cfg) == size
    leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
    for leaf in leaves:  # every parameter carries one logical name per axis
        assert isinstance(leaf, nn.LogicallyPartitioned), leaf
        assert len(leaf.names) == len(leaf.value.shape)
    if cfg.scan_layers:
        assert any("layers" in leaf.names for leaf in leaves)
    flops = models.flops_per_token(cfg)
    assert flops > 6 * cfg.d_model * cfg.vocab_size


def test_flops_per_token_follows_the_documented_convention():
    cfg = tiny()
    n_embed = cfg.vocab_size * cfg.d_model + cfg.max_len * cfg.d_model
    n = models.count_params(cfg) - n_embed
    want = 6 * n + 12 * cfg.num_layers * 32 * cfg.d_model + 6 * cfg.d_model * cfg.vocab_size
    assert models.flops_per_token(cfg, seq_len=32) == pytest.approx(want)


def test_moe_routing_respects_capacity():
    cfg = tiny(moe_every=1, num_experts=4, moe_top_k=2, moe_capacity_factor=0.5)
    b, t = 3, 16
    logits = 3 * np.random.default_rng(0).standard_normal((b, t, 4))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    cap = layers.expert_capacity(cfg, t)
    assert cap == 4
    route = jax.jit(layers.top_k_routing, static_argnums=(1, 2))
    combine, dispatch = route(probs, 2, cap)
    d = np.asarray(dispatch, np.int32)
    assert d.shape == (b, t, 4, cap)
    assert d.sum(axis=1).max() <= 1  # a slot holds at most one token
    assert d.sum(axis=(1, 3)).max() <= cap  # an expert holds at most `cap` tokens
    assert d.sum(axis=(2, 3)).max() <= 2  # a token goes to at most k experts
    assert d.sum() < b * t * 2  # capacity 0.5: some choices were dropped
    assert np.all(np.asarray(combine).sum(axis=(2, 3)) <= 1 + 1e-6)
    # With room for everything, nothing is dropped and each token's gates sum to 1.
    combine, dispatch = route(probs, 2, 2 * t)
    np.testing.assert_allclose(np.asarray(combine).sum(axis=(2, 3)), 1.0, rtol=1e-5)


def test_moe_model_aux_loss_is_finite_and_differentiable():
    cfg = tiny(moe_every=2, num_experts=4)
    model, params = init(cfg)
    x = tokens(8)

    def loss(p):
        logits, mutated = model.apply({"params": p}, x, mutable=["losses"])
        return jnp.mean(logits ** 2) + cfg.moe_aux_weight * models.aux_loss(mutated), mutated

    (value, mutated), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    aux = models.aux_loss(mutated)
    assert np.isfinite(aux) and aux >= 1.0 - 1e-5  # Switch loss is >= 1, 1 when balanced
    assert np.isfinite(value)
    router_grad = grads["decoder"]["layer_1"]["moe"]["router"]
    assert np.all(np.isfinite(router_grad)) and np.abs(router_grad).max() > 0
    assert float(models.aux_loss({})) == 0.0


def test_bfloat16_compute_keeps_float32_params_and_logits():
    model, params = init(tiny(dtype="bfloat16", kernel="rbf"))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
    logits = forward(model)(params, tokens(9))
    assert logits.dtype == jnp.float32 and np.all(np.isfinite(logits))


def test_dropout_is_active_only_when_not_deterministic():
    model, params = init(tiny(dropout=0.5))
    x = tokens(10)
    run = jax.jit(lambda p, r: model.apply({"params": p}, x, deterministic=False,
                                           rngs={"dropout": r}))
    a, b = run(params, jax.random.PRNGKey(1)), run(params, jax.random.PRNGKey(2))
    assert not np.allclose(a, b)
    run = forward(model)
    np.testing.assert_allclose(run(params, x), run(params, x))


def test_hash_dropout_drops_the_rate_and_keeps_the_mean():
    from lm.layers import Dropout

    x = jnp.ones((64, 128, 32))
    drop = Dropout(0.3)
    y = drop.apply({}, x, deterministic=False, rngs={"dropout": jax.random.PRNGKey(0)})
    dropped = float(jnp.mean(y == 0))
    assert abs(dropped - 0.3) < 0.01, dropped
    assert abs(float(jnp.mean(y)) - 1.0) < 0.02
    # neighbouring elements are not correlated, and another key gives another mask
    kept = np.asarray(y != 0, np.float32).ravel()
    assert abs(np.corrcoef(kept[:-1], kept[1:])[0, 1]) < 0.02
    z = drop.apply({}, x, deterministic=False, rngs={"dropout": jax.random.PRNGKey(1)})
    assert 0.3 < float(jnp.mean((y == 0) != (z == 0))) < 0.5
    np.testing.assert_array_equal(drop.apply({}, x, deterministic=True), x)


def test_bad_model_configs_are_clear_errors():
    with pytest.raises(ConfigError, match="num_heads"):
        tiny(num_heads=5)
    with pytest.raises(ConfigError, match="num_kv_heads"):
        tiny(num_kv_heads=3)
    with pytest.raises(ConfigError, match="kernel"):
        tiny(kernel="cosine")
    with pytest.raises(ConfigError, match="ModelConfig"):
        models.build_model({"kind": "decoder"})
    with pytest.raises(ValueError, match="max_len"):
        models.init_cache(models.build_model(tiny()), 1, 64)
    with pytest.raises(ValueError, match="max_len"):
        jax.eval_shape(models.build_model(tiny()).init, jax.random.PRNGKey(0), tokens(0, (1, 17)))


# ----------------------------------------------------------------------------- KV cache


def _decode_in_steps(step, cache, tgt, prefill=3):
    """A prefill chunk of `prefill` tokens, then one token at a time; logits concatenated."""
    pieces = []
    for start, stop in [(0, prefill)] + [(i, i + 1) for i in range(prefill, tgt.shape[1])]:
        logits, cache = step(cache, tgt[:, start:stop])
        pieces.append(np.asarray(logits))
    return np.concatenate(pieces, axis=1)


@pytest.mark.parametrize("kw", [
    dict(position="rope", pre_norm=False),
    dict(kernel="linear", position="rope", num_kv_heads=2, remat="full"),
    dict(kernel="performer", num_kv_heads=1, scan_layers=True),  # multi-query
])
def test_decoder_kv_cache_matches_full_forward(kw):
    assert_decode_matches_forward(tiny(max_len=10, **kw))


def assert_decode_matches_forward(cfg):
    """Prefill, then one token at a time through the KV cache == one full forward pass."""
    model, params = init(cfg)
    tgt = tokens(11, (2, 10))
    full = forward(model)(params, tgt)

    @jax.jit
    def step(cache, tok):
        logits, mutated = model.apply({"params": params, "cache": cache}, tok, decode=True,
                                      mutable=["cache"])
        return logits, mutated["cache"]

    cache = models.init_cache(model, 2, cfg.max_len)
    np.testing.assert_allclose(_decode_in_steps(step, cache, tgt), full, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kw", [
    dict(position="rope"),
    dict(kernel="linear", position="rope", scan_layers=True, num_kv_heads=2),
])
def test_encoder_decoder_kv_cache_matches_full_forward(kw):
    cfg = tiny(kind="encoder_decoder", max_len=10, **kw)
    model, params = init(cfg)
    src, tgt = tokens(12, (2, 8)), tokens(13, (2, 10))
    src_seg = np.array([[1] * 8, [1] * 5 + [0] * 3], np.int32)  # second source padded
    full = jax.jit(lambda p: model.apply({"params": p}, src, tgt, src_segment_ids=src_seg))(params)

    @jax.jit
    def step(cache, tok, encoded):
        encoded = model.apply({"params": params}, src, src_seg, method=model.encode) \
            if encoded else None
        logits, mutated = model.apply({"params": params, "cache": cache}, encoded, src_seg, tok,
                                      decode=True, method=model.decode, mutable=["cache"])
        return logits, mutated["cache"]

    step = jax.jit(step.__wrapped__, static_argnums=2)
    cache = models.init_cache(model, 2, cfg.max_len, src_len=8)
    # The first call caches the projected source; later calls reuse it (encoded=None).
    first, cache = step(cache, tgt[:, :3], True)
    rest = _decode_in_steps(lambda c, t: step(c, t, False), cache, tgt[:, 3:], prefill=1)
    np.testing.assert_allclose(np.concatenate([first, rest], 1), full, atol=1e-4, rtol=1e-4)


def _chunk_setup(tie, t=20):
    cfg = ModelConfig(d_model=32, num_heads=2, num_layers=1, max_len=t, vocab_size=96,
                      tie_embeddings=tie, dtype="float32")
    model, params = init(cfg)  # numpy draws: no init compile
    rng = np.random.default_rng(0)
    batch = {"inputs": rng.integers(0, 96, (2, t)).astype(np.int32),
             "targets": rng.integers(0, 96, (2, t)).astype(np.int32),
             "weights": (rng.random((2, t)) > 0.2).astype(np.float32),
             "segment_ids": np.ones((2, t), np.int32)}
    return model, params, batch


def _next_token_sums(model, params, batch, *, chunk, z_loss=0.0):
    """The registry's next_token train sums with train.loss_chunk = chunk."""
    from ml_collections import ConfigDict

    from lm import objectives
    from lm.objectives.base import Context
    ctx = Context(model=model, train=ConfigDict(dict(z_loss=z_loss, loss_chunk=chunk)),
                  document_masking=False)
    return objectives.get("next_token").train_sums(ctx, params, None, batch)


@pytest.mark.parametrize("tie", [True, False])
def test_chunked_cross_entropy_matches_the_plain_one_with_gradients(tie):
    model, params, batch = _chunk_setup(tie)

    def loss(p, chunk):
        sums, _ = _next_token_sums(model, p, batch, chunk=chunk, z_loss=1e-4)
        return sums["nll_sum"] + sums["z_sum"], sums

    grad = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)  # as the trainer runs it
    (ref, ref_sums), ref_g = grad(params, 0)
    (got, got_sums), got_g = grad(params, 8)  # 20 = 8+8+4 (padded)
    for k in ref_sums:
        np.testing.assert_allclose(got_sums[k], ref_sums[k], rtol=1e-5, err_msg=k)
    for a, b in zip(jax.tree.leaves(got_g), jax.tree.leaves(ref_g)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_chunked_cross_entropy_keeps_no_full_logits_buffer():
    model, params, batch = _chunk_setup(False, t=24)

    def text(chunk):
        f = lambda p: _next_token_sums(model, p, batch, chunk=chunk)[0]["nll_sum"]  # noqa: E731
        return jax.jit(jax.grad(f)).lower(params).as_text()

    assert "tensor<2x24x96xf32>" in text(0)  # the plain loss: [B, T, V] f32 logits
    chunked = text(8)
    assert "tensor<2x24x96xf32>" not in chunked and "tensor<2x8x96xf32>" in chunked
