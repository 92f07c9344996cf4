"""Model knobs that pretrained families need: norm eps, exact GELU, q/k/v-only bias, rope scaling,
partial rotary, parallel residual, q/k norm, sliding window. (Logit-level agreement with
`transformers` is in test_hf.py; here: the knobs' own contracts and the KV cache.)"""

import math

import jax
import numpy as np
import pytest
from test_models import assert_decode_matches_forward, forward, init, tiny, tokens

from lm import attention, models
from lm.config import ConfigError

ALL_KNOBS = dict(position="rope", norm="rmsnorm", use_bias=False, qkv_bias=True, qk_norm=True,
                 sliding_window=3, rope_scaling="llama3", rope_factor=8.0,
                 rope_original_max_len=4, rotary_fraction=0.5, num_kv_heads=2, norm_eps=1e-5,
                 mlp="gelu_exact")


@pytest.mark.parametrize("kw", [
    ALL_KNOBS,
    dict(position="rope", parallel_residual=True, rotary_fraction=0.25, mlp="gelu_exact",
         tie_embeddings=False, d_model=64),
])
def test_kv_cache_decode_matches_full_forward_with_knobs(kw):
    assert_decode_matches_forward(tiny(max_len=10, **kw))


def test_sliding_window_limits_what_a_query_sees():
    cfg = tiny(position="rope", sliding_window=4, num_layers=1)
    model, params = init(cfg)
    a = tokens(1)
    b = a.copy()
    b[:, 0] = (a[:, 0] + 1) % 50
    la, lb = forward(model)(params, a), forward(model)(params, b)
    # One layer, window 4: positions 0..3 see token 0, positions 4.. do not.
    assert not np.allclose(la[:, 3], lb[:, 3], atol=1e-4)
    np.testing.assert_allclose(la[:, 4:], lb[:, 4:], atol=1e-6)


def test_partial_rotary_leaves_the_other_dims_alone():
    cfg = tiny(position="rope", rotary_fraction=0.25, d_model=64)  # head dim 16, 4 rotated
    assert cfg.rotary_dims == 4
    x = np.random.default_rng(0).standard_normal((1, 6, 2, 16)).astype(np.float32)
    y = np.asarray(attention.apply_rope(x, np.arange(6) + 3, freq=attention.rope_frequencies(cfg)))
    np.testing.assert_array_equal(y[..., 4:], x[..., 4:])
    assert not np.allclose(y[..., :4], x[..., :4])
    np.testing.assert_allclose(np.linalg.norm(y[..., :4], axis=-1),
                               np.linalg.norm(x[..., :4], axis=-1), rtol=1e-5)


def test_llama3_rope_frequencies_follow_the_published_rule():
    cfg = tiny(position="rope", d_model=128, num_heads=2, rope_base=500000.0, rope_scaling="llama3",
               rope_factor=8.0, rope_low_freq_factor=1.0, rope_high_freq_factor=4.0,
               rope_original_max_len=8192)
    got = np.asarray(attention.rope_frequencies(cfg))
    want = []
    for i in range(32):  # the rule of Llama 3.1's reference code, one frequency at a time
        f = 500000.0 ** (-2 * i / 64)
        wavelen = 2 * math.pi / f
        if wavelen < 8192 / 4.0:
            want.append(f)
        elif wavelen > 8192 / 1.0:
            want.append(f / 8.0)
        else:
            smooth = (8192 / wavelen - 1.0) / (4.0 - 1.0)
            want.append((1 - smooth) * f / 8.0 + smooth * f)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert (got < np.asarray([500000.0 ** (-2 * i / 64) for i in range(32)]) * 0.99).any()


def test_qkv_bias_puts_biases_on_q_k_v_only():
    _, params = init(tiny(use_bias=False, qkv_bias=True, num_kv_heads=2))
    attn = params["decoder"]["layer_0"]["attn"]
    assert {"query_bias", "kv_bias"} <= set(attn) and "out_bias" not in attn
    assert "bi" not in params["decoder"]["layer_0"]["mlp"]
    _, fused = init(tiny(use_bias=False, qkv_bias=True))
    assert "qkv_bias" in fused["decoder"]["layer_0"]["attn"]


def test_exact_gelu_and_norm_eps_change_the_numbers():
    x = tokens(3)
    base_model, params = init(tiny())
    base = forward(base_model)(params, x)
    for kw in (dict(mlp="gelu_exact"), dict(norm_eps=1e-2)):
        model, _ = init(tiny(**kw))
        assert not np.allclose(forward(model)(params, x), base, atol=1e-6), kw


def test_bad_knob_values_are_clear_errors():
    for kw, key in [(dict(norm_eps=0.0), "norm_eps"), (dict(mlp="relu"), "mlp"),
                    (dict(rope_scaling="yarn"), "rope_scaling"),
                    (dict(rotary_fraction=1.5), "rotary_fraction"),
                    (dict(position="rope", rotary_fraction=0.1), "rotary_fraction"),
                    (dict(parallel_residual=True, pre_norm=False), "parallel_residual"),
                    (dict(sliding_window=-1), "sliding_window"),
                    (dict(rope_scaling="llama3", rope_low_freq_factor=4.0), "rope_low_freq_factor")]:
        with pytest.raises(ConfigError, match=f"model.{key}"):
            tiny(**kw)
