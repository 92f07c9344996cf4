"""Attention as kernel smoothing: each fast path against a literal Nadaraya-Watson loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm import attention as A
from lm.config import ModelConfig


def _qkv(seed, t=6, s=6, h=4, kv=2, e=8, scale=1.0):
    rng = np.random.default_rng(seed)
    q = scale * rng.standard_normal((1, t, h, e), np.float32)
    k = scale * rng.standard_normal((1, s, kv, e), np.float32)
    v = rng.standard_normal((1, s, kv, e), np.float32)
    return q, k, v


# One compiled program per call signature instead of many eagerly compiled primitives.
smooth = jax.jit(A.smooth, static_argnames=("kernel", "causal", "impl"))
feature_smoother = jax.jit(A.feature_smoother, static_argnames=("kernel", "causal", "chunk"))


KERNELS = {
    "exp": A.ExpKernel(8 ** -0.5),
    "rbf": A.RBFKernel(0.3),
    "linear": A.LinearKernel(1.0),
}


def test_kernel_properties():
    assert all(k.non_negative for k in KERNELS.values())
    assert A.RBFKernel.shift_invariant and not A.ExpKernel.shift_invariant
    assert A.LinearKernel.feature_map and A.PerformerKernel.feature_map
    assert A.PerformerKernel.randomized and not A.ExpKernel.randomized
    assert A.ExpKernel.normalized_by_softmax and not A.LinearKernel.normalized_by_softmax
    for name, kernel in KERNELS.items():  # symmetry and non-negativity hold numerically
        x = jax.random.normal(jax.random.PRNGKey(1), (5, 8))
        gram = kernel.pairwise(x, x)
        assert np.all(np.asarray(gram) >= 0), name
        np.testing.assert_allclose(gram, gram.T, rtol=1e-5, err_msg=name)
    for kind in ("exp", "rbf", "linear", "performer"):
        assert A.make_kernel(ModelConfig(kernel=kind)).name == kind


@pytest.mark.parametrize("name", sorted(KERNELS))
@pytest.mark.parametrize("causal", [False, True])
def test_smoother_equals_nadaraya_watson_loop(name, causal):
    kernel = KERNELS[name]
    q, k, v = _qkv(0)
    t, s = q.shape[1], k.shape[1]
    mask = np.tril(np.ones((t, s), bool)) if causal else None
    want = A.reference_smoother(kernel, q[0], k[0], v[0], mask)
    got = smooth(kernel=kernel, q=q, k=k, v=v, causal=causal)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    if kernel.normalized_by_softmax:  # the written-out einsum path is the same function
        got = smooth(kernel=kernel, q=q, k=k, v=v, causal=causal, impl="einsum")[0]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_smoother_with_explicit_mask(name):
    """Segment-style masks (the quadratic path of feature kernels), combined with causality."""
    kernel = KERNELS[name]
    q, k, v = _qkv(1)
    seg = jnp.array([[1, 1, 1, 2, 2, 0]])
    mask = A.segment_mask(seg, seg)
    want_mask = np.asarray(mask[0, 0]) & np.tril(np.ones((6, 6), bool))
    want = A.reference_smoother(kernel, q[0], k[0], v[0], want_mask)
    for impl in ("fused", "einsum"):
        got = smooth(kernel=kernel, q=q, k=k, v=v, mask=mask, causal=True, impl=impl)[0]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_chunked_causal_linear_with_padding():
    """T not a multiple of the chunk: several chunks, a padded tail, prefix sums across chunks."""
    kernel = KERNELS["linear"]
    q, k, v = _qkv(2, t=11, s=11, h=2, kv=1)
    want = A.reference_smoother(kernel, q[0], k[0], v[0], np.tril(np.ones((11, 11), bool)))
    got = feature_smoother(kernel, q, k, v, causal=True, chunk=4)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_performer_error_falls_with_features():
    exact = KERNELS["exp"]
    errors = []
    for features in (16, 256, 4096):
        err = []
        for seed in range(3):
            q, k, v = _qkv(10 + seed, t=8, s=8, h=2, kv=2, e=8, scale=0.7)
            want = smooth(kernel=exact, q=q, k=k, v=v)
            perf = A.PerformerKernel(exact.scale, num_features=features, seed=seed)
            # eager: the projection is then an input, and compiled primitives are shared across seeds
            err.append(float(jnp.mean(jnp.abs(A.smooth(perf, q, k, v) - want))))
        errors.append(np.mean(err))
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.05, errors


def test_performer_causal_matches_its_own_quadratic_form():
    kernel = A.PerformerKernel(0.3, num_features=32)
    q, k, v = _qkv(3, t=9, s=9)
    want = A.reference_smoother(kernel, q[0], k[0], v[0], np.tril(np.ones((9, 9), bool)))
    got = feature_smoother(kernel, q, k, v, causal=True, chunk=4)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_grouped_query_equals_repeated_heads(name):
    kernel = KERNELS[name]
    q, k, v = _qkv(4, h=6, kv=2)
    grouped = smooth(kernel=kernel, q=q, k=k, v=v, causal=True)
    plain = smooth(kernel, q, jnp.repeat(k, 3, axis=2), jnp.repeat(v, 3, axis=2), causal=True)
    np.testing.assert_allclose(grouped, plain, rtol=1e-5, atol=1e-6)


def test_rope_scores_depend_on_offset_only():
    q, k, _ = _qkv(5, t=5, s=5, h=1, kv=1)
    pos = jnp.arange(5)

    def scores(shift):
        qr, kr = A.apply_rope(q, pos + shift), A.apply_rope(k, pos + shift)
        return jnp.einsum("bthe,bshe->ts", qr, kr)

    np.testing.assert_allclose(scores(0), scores(17), rtol=1e-4, atol=1e-4)
    assert not np.allclose(scores(0), jnp.einsum("bthe,bshe->ts", q, k), atol=1e-3)
    np.testing.assert_allclose(jnp.linalg.norm(A.apply_rope(q, pos), axis=-1),
                               jnp.linalg.norm(q, axis=-1), rtol=1e-5)


def test_unknown_attention_impl_is_an_error():
    q, k, v = _qkv(6)
    with pytest.raises(ValueError, match="impl"):
        A.softmax_smoother(q, k, v, scale=1.0, impl="flash")
