"""Attention as kernel smoothing (Nadaraya-Watson), multi-head / grouped-query attention, KV cache.

Single-query attention (Phuong & Hutter, Alg 3) is a Nadaraya-Watson smoother: the output for a
query q is  sum_s K(q, k_s) v_s / sum_s K(q, k_s)  for a non-negative kernel K. Softmax attention
is the exponential kernel K(q, k) = exp(scale * q.k); other kernels plug in through the same
smoother. Two families have fast paths:

* logit kernels (exp, rbf): K = exp(score); the smoother is a softmax over scores, computed by one
  fused `jax.nn.dot_product_attention` call or by the equivalent einsum path (`impl` below);
* feature kernels (linear, performer): K(q, k) = phi(q).phi(k); the smoother is computed in O(T)
  associative form  phi(Q) (phi(K)^T V) / phi(Q) (phi(K)^T 1), causally by chunked prefix sums.

Shapes: q [B, T, H, E], k and v [B, S, K, E]. Query head h belongs to kv head h // G with
G = H // K query heads per kv head (grouped-query attention; K = 1 is multi-query).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lm import fast_attention
from lm.config import ConfigError, ModelConfig
from lm.precision import compute_dtype, dense  # noqa: F401  (compute_dtype: part of this API)

# Large negative logit for masked keys: exp underflows to 0, yet a fully masked row stays finite.
MASKED = -1e30
# Causal linear attention works on chunks of this many positions (quadratic inside a chunk,
# prefix sums of chunk states across chunks): memory O(T*C + T/C*F*E) instead of O(T*F*E).
LINEAR_CHUNK = 64


# ----------------------------------------------------------------------------- helpers


def param(module: nn.Module, name: str, shape, axes, std: float = 0.02, init=None):
    """A float32 parameter carrying logical axis names (normal(std) init unless `init`)."""
    init = init or nn.initializers.normal(std)
    return module.param(name, nn.with_logical_partitioning(init, axes), shape, jnp.float32)


def rope_frequencies(cfg: ModelConfig):
    """Inverse wavelengths [R/2] of the R = cfg.rotary_dims rotated dims, scaled as cfg says.

    Computed in float64 and cast once to float32: the exact 1 / base**(2i/R) rounded, as
    transformers' float32 `1 / base ** (arange(0, R, 2) / R)` is not (its error, multiplied by
    the position, grows along a long context).
    linear: every frequency divided by rope_factor. llama3 (Llama 3.1): wavelengths longer than
    original_max_len / low_freq_factor are stretched by rope_factor, shorter than
    original_max_len / high_freq_factor kept, and the band between interpolated smoothly.
    """
    dims = cfg.rotary_dims
    freq = 1.0 / float(cfg.rope_base) ** (np.arange(0, dims, 2, dtype=np.float64) / dims)
    if cfg.rope_scaling == "linear":
        freq = freq / cfg.rope_factor
    elif cfg.rope_scaling == "llama3":
        orig, low, high = cfg.rope_original_max_len, cfg.rope_low_freq_factor, cfg.rope_high_freq_factor
        wavelen = 2 * np.pi / freq
        scaled = np.where(wavelen > orig / low, freq / cfg.rope_factor, freq)
        smooth = (orig / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / cfg.rope_factor + smooth * scaled
        medium = (wavelen >= orig / high) & (wavelen <= orig / low)
        freq = np.where(medium, smoothed, scaled)
    return jnp.asarray(freq.astype(np.float32))


def apply_rope(x, positions, base: float = 10000.0, freq=None):
    """Rotary position embedding (RoFormer) on the last axis of x [B, T, H, E].

    Pairs (x_i, x_{i+R/2}) are rotated by angle pos * freq_i, so q.k depends on the position
    difference only. freq: [R/2] inverse wavelengths (default base^(-2i/E) over all E dims, see
    `rope_frequencies`); dims past R pass through unrotated (partial rotary, GPT-NeoX).
    positions: [T] or [B, T] integers.
    """
    if freq is None:  # float64 then float32, as rope_frequencies
        dims = x.shape[-1]
        freq = jnp.asarray((1.0 / float(base) ** (np.arange(0, dims, 2, dtype=np.float64) / dims)
                            ).astype(np.float32))
    half = freq.shape[0]
    angle = jnp.asarray(positions, jnp.float32)[..., None] * freq  # [(B,) T, R/2]
    if angle.ndim == 2:
        angle = angle[None]
    sin = jnp.sin(angle)[:, :, None, :].astype(x.dtype)  # [B|1, T, 1, R/2]
    cos = jnp.cos(angle)[:, :, None, :].astype(x.dtype)
    x1, x2, rest = x[..., :half], x[..., half:2 * half], x[..., 2 * half:]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest], axis=-1)


def segment_mask(q_segment_ids, kv_segment_ids):
    """[B, 1, T, S] bool: a query sees keys of its own segment (0 = padding sees padding)."""
    return (q_segment_ids[:, None, :, None] == kv_segment_ids[:, None, None, :])


def key_mask(kv_segment_ids, num_queries: int):
    """[B, 1, T, S] bool: every query sees the non-padding keys."""
    valid = kv_segment_ids[:, None, None, :] != 0
    return jnp.broadcast_to(valid, valid.shape[:2] + (num_queries,) + valid.shape[3:])


def window_mask(num_queries: int, num_keys: int, local_window_size, offset=0):
    """[1, 1, T, S] bool: query t sees keys in [t - left, t + right] (left, right = the window)."""
    left, right = local_window_size
    rel = jnp.arange(num_keys)[None, :] - (offset + jnp.arange(num_queries)[:, None])
    return ((rel >= -left) & (rel <= right))[None, None]


def causal_mask(num_queries: int, num_keys: int, offset=0, window: int = 0):
    """[1, 1, T, S] bool: query t (at absolute position offset + t) sees keys s <= offset + t,
    and with a sliding window only the last `window` of them (s > offset + t - window)."""
    q_pos = offset + jnp.arange(num_queries)[:, None]
    k_pos = jnp.arange(num_keys)[None, :]
    seen = k_pos <= q_pos
    if window:
        seen = seen & (k_pos > q_pos - window)
    return seen[None, None]


# ----------------------------------------------------------------------------- kernels


@dataclasses.dataclass(frozen=True)
class Kernel:
    """A smoothing kernel K(q, k) >= 0 and its properties.

    `pairwise(q, k)` is the literal definition (q [..., T, E], k [..., S, E] -> [..., T, S]); the
    smoother uses the fast path of the kernel's family, tests compare it with the definition.
    """

    scale: float  # bandwidth: multiplies q.k (exp), 1/tau (rbf); unused by linear

    name: ClassVar[str] = ""
    non_negative: ClassVar[bool] = True  # K >= 0, so the smoother is a weighted average
    shift_invariant: ClassVar[bool] = False  # K depends on q - k only
    feature_map: ClassVar[bool] = False  # finite phi with K = phi(q).phi(k): O(T) smoother
    randomized: ClassVar[bool] = False  # a random approximation of another kernel
    normalized_by_softmax: ClassVar[bool] = False  # logit family: K = exp(score)

    def pairwise(self, q, k):
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class ExpKernel(Kernel):
    """K(q, k) = exp(scale * q.k): softmax attention."""

    name: ClassVar[str] = "exp"
    normalized_by_softmax: ClassVar[bool] = True

    def pairwise(self, q, k):
        return jnp.exp(self.scale * jnp.einsum("...te,...se->...ts", q, k))

    def key_bias(self, k):
        return None


@dataclasses.dataclass(frozen=True)
class RBFKernel(Kernel):
    """Gaussian K(q, k) = exp(-scale/2 |q - k|^2) with bandwidth tau = 1/scale.

    In the smoother the query term exp(-scale/2 |q|^2) cancels, leaving a softmax of
    scale * q.k plus the per-key bias -scale/2 |k|^2: exact, and on the fused path.
    """

    name: ClassVar[str] = "rbf"
    shift_invariant: ClassVar[bool] = True
    normalized_by_softmax: ClassVar[bool] = True

    def pairwise(self, q, k):
        d2 = jnp.sum((q[..., :, None, :] - k[..., None, :, :]) ** 2, axis=-1)
        return jnp.exp(-0.5 * self.scale * d2)

    def key_bias(self, k):
        """[B, S, K] additive score of each key."""
        return -0.5 * self.scale * jnp.sum(jnp.square(k.astype(jnp.float32)), axis=-1)


@dataclasses.dataclass(frozen=True)
class LinearKernel(Kernel):
    """K(q, k) = phi(q).phi(k) with phi = elu + 1 > 0 (Katharopoulos et al. 2020)."""

    name: ClassVar[str] = "linear"
    feature_map: ClassVar[bool] = True

    def features(self, x, is_query: bool):
        x = x.astype(jnp.float32)
        return jax.nn.elu(x) + 1.0

    def pairwise(self, q, k):
        return jnp.einsum("...tf,...sf->...ts", self.features(q, True), self.features(k, False))


@functools.lru_cache(maxsize=32)
def _orthogonal_gaussian(num_features: int, dim: int, seed: int) -> np.ndarray:
    """[F, E] rows: blocks of orthogonal directions with chi-distributed norms (FAVOR+)."""
    rng = np.random.default_rng(seed)
    blocks = []
    for _ in range(-(-num_features // dim)):
        q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        blocks.append(q.T)
    w = np.concatenate(blocks, axis=0)[:num_features]
    norms = np.linalg.norm(rng.standard_normal((num_features, dim)), axis=1)
    return (w * norms[:, None]).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class PerformerKernel(Kernel):
    """FAVOR+ positive random features (Choromanski et al. 2021), approximating exp(scale q.k).

    phi(x) = exp(w_i.x - |x|^2/2) / sqrt(F) with x = sqrt(scale) * input, so that
    E[phi(q).phi(k)] = exp(scale q.k). The projection w [F, E] is a fixed, deterministic draw
    (orthogonal blocks, from `seed`), built with numpy at trace time: it is a constant of the
    compiled program, not a parameter, and is the same for every layer and head.
    """

    num_features: int = 64
    seed: int = 0

    name: ClassVar[str] = "performer"
    feature_map: ClassVar[bool] = True
    randomized: ClassVar[bool] = True

    def features(self, x, is_query: bool):
        x = x.astype(jnp.float32) * (self.scale ** 0.5)
        w = jnp.asarray(_orthogonal_gaussian(self.num_features, x.shape[-1], self.seed))
        proj = jnp.einsum("...e,fe->...f", x, w) - 0.5 * jnp.sum(x * x, axis=-1, keepdims=True)
        if is_query:  # a per-query constant cancels in the smoother; it keeps exp() in range
            proj = proj - jax.lax.stop_gradient(jnp.max(proj, axis=-1, keepdims=True))
        return jnp.exp(proj) * (self.num_features ** -0.5)

    def pairwise(self, q, k):
        return jnp.einsum("...tf,...sf->...ts", self.features(q, False), self.features(k, False))


def make_kernel(cfg: ModelConfig) -> Kernel:
    """The kernel named by cfg.kernel, with bandwidth cfg.scale."""
    if cfg.kernel == "exp":
        return ExpKernel(cfg.scale)
    if cfg.kernel == "rbf":
        return RBFKernel(cfg.scale)
    if cfg.kernel == "linear":
        return LinearKernel(cfg.scale)
    if cfg.kernel == "performer":
        return PerformerKernel(cfg.scale, num_features=cfg.performer_features)
    raise ConfigError(f"model.kernel: unknown kernel {cfg.kernel!r}")


# ----------------------------------------------------------------------------- smoothers


def _group(q, num_kv_heads):
    """[B, T, H, E] -> [B, T, K, G, E] (query head h = k * G + g)."""
    b, t, h, e = q.shape
    return q.reshape(b, t, num_kv_heads, h // num_kv_heads, e)


def softmax_smoother(q, k, v, *, scale, bias=None, mask=None, causal=False, impl="xla",
                     segment_ids=None, local_window_size=None):
    """sum_s softmax_s(scale q.k_s + bias_s) v_s for logit kernels.

    bias: [B, S, K] per-key score (rbf) or None. mask: bool broadcastable to [B, H, T, S].
    impl: 'auto' | 'xla' (alias 'fused') | 'cudnn' | 'splash' | 'einsum' (lm.fast_attention
    says which runs where). segment_ids [B, T]: the segments behind `mask` for self-attention
    (splash takes ids, not a mask). local_window_size (left, right): banded attention.
    """
    b, t, h, e = q.shape
    kv_heads = k.shape[2]
    requested = impl
    impl = fast_attention.choose(impl, dtype=q.dtype, head_dim=e, q_len=t, kv_len=k.shape[1],
                                 decode=False)
    if segment_ids is not None and impl not in ("cudnn", "splash"):  # they take the ids
        seg = segment_mask(segment_ids, segment_ids)
        mask = seg if mask is None else mask & seg
    if impl == "splash" and mask is not None and segment_ids is None:
        if requested == "auto":  # a cross-attention / padding mask: not splash's kind
            fast_attention.fallback("masked cross-attention on TPU runs XLA, not splash",
                                    "splash takes segment ids of self-attention only")
            return softmax_smoother(q, k, v, scale=scale, bias=bias, mask=mask, causal=causal,
                                    impl="xla", local_window_size=local_window_size)
        raise ConfigError("model.attention_impl='splash' takes segment ids, not an arbitrary mask "
                          "(cross-attention / padding masks run on 'xla')")
    if impl != "einsum" and bias is not None and (impl != "xla" or q.dtype != jnp.float32):
        # Exact per-key bias inside the fused kernel (cuDNN refuses a [B,H,1,S] bias).
        q, k, v, scale = fast_attention.fold_key_bias(q, k, v, bias, scale, impl == "splash")
        bias = None
    if impl == "cudnn":
        out = fast_attention.cudnn_attention(q, k, v, scale=scale, mask=mask, causal=causal,
                                             local_window_size=local_window_size,
                                             segment_ids=segment_ids)
        return out[..., :e]
    if impl == "splash":
        out = fast_attention.splash_attention(q, k, v, scale=scale, segment_ids=segment_ids,
                                              causal=causal, local_window_size=local_window_size)
        return out[..., :e]
    if impl == "xla":
        if bias is not None:  # [B, S, K] -> [B, H, 1, S]
            bias = jnp.repeat(jnp.transpose(bias, (0, 2, 1)), h // kv_heads, axis=1)[:, :, None, :]
            bias = bias.astype(q.dtype)
        out = jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask, scale=scale,
                                           is_causal=causal, local_window_size=local_window_size)
        return out[..., :e]
    if local_window_size is not None:
        band = window_mask(t, k.shape[1], local_window_size)
        mask = band if mask is None else mask & band
    qg = _group(q * jnp.asarray(scale, q.dtype), kv_heads)
    s = jnp.einsum("btkge,bske->bkgts", qg, k, preferred_element_type=jnp.float32)
    if bias is not None:
        s = s + jnp.transpose(bias, (0, 2, 1))[:, :, None, None, :]
    if causal:
        mask = causal_mask(t, k.shape[1]) if mask is None else mask & causal_mask(t, k.shape[1])
    if mask is not None:  # [B|1, H|1, T, S] -> [B|1, K|1, G|1, T, S]
        mb, mh = mask.shape[:2]
        mask = mask.reshape(mb, 1, 1, *mask.shape[2:]) if mh == 1 else mask.reshape(
            mb, kv_heads, h // kv_heads, *mask.shape[2:])
        s = jnp.where(mask, s, MASKED)
    p = jax.nn.softmax(s, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bske->btkge", p, v)
    return out.reshape(b, t, h, v.shape[-1])


def _safe_divide(num, den):
    return num / jnp.where(den > 0, den, 1.0)[..., None]


def feature_smoother(kernel, q, k, v, *, mask=None, causal=False, chunk=LINEAR_CHUNK):
    """phi(q).sum_s phi(k_s) v_s / phi(q).sum_s phi(k_s) for feature kernels.

    No mask: O(T) associative form (global sums; causal: chunked prefix sums). With an explicit
    mask (segments, padding, KV-cache positions) the exact quadratic form is used instead.
    """
    b, t, h, e = q.shape
    kv_heads = k.shape[2]
    fq = _group(kernel.features(q, True), kv_heads)  # [B, T, K, G, F]
    fk = kernel.features(k, False)  # [B, S, K, F]
    vf = v.astype(jnp.float32)
    if mask is not None:
        if causal:
            mask = mask & causal_mask(t, k.shape[1])
        w = jnp.einsum("btkgf,bskf->bkgts", fq, fk)
        mb, mh = mask.shape[:2]
        mask = mask.reshape(mb, 1, 1, *mask.shape[2:]) if mh == 1 else mask.reshape(
            mb, kv_heads, h // kv_heads, *mask.shape[2:])
        w = jnp.where(mask, w, 0.0)
        num = jnp.einsum("bkgts,bske->btkge", w, vf)
        out = _safe_divide(num, jnp.moveaxis(jnp.sum(w, -1), 3, 1))
    elif not causal:
        kv = jnp.einsum("bskf,bske->bkfe", fk, vf)
        z = jnp.sum(fk, axis=1)  # [B, K, F]
        out = _safe_divide(jnp.einsum("btkgf,bkfe->btkge", fq, kv),
                           jnp.einsum("btkgf,bkf->btkg", fq, z))
    else:
        out = _causal_linear(fq, fk, vf, chunk)
    return out.reshape(b, t, h, v.shape[-1]).astype(v.dtype)


def _causal_linear(fq, fk, v, chunk):
    """Causal prefix-sum smoother over chunks of C positions. fq [B,T,K,G,F], fk [B,T,K,F]."""
    b, t = fq.shape[:2]
    c = min(chunk, t)
    pad = -t % c
    if pad:  # padded keys have zero features, so they carry no weight
        fq, fk, v = (jnp.pad(a, [(0, 0), (0, pad)] + [(0, 0)] * (a.ndim - 2)) for a in (fq, fk, v))
    n = (t + pad) // c
    qc = fq.reshape(b, n, c, *fq.shape[2:])  # [B, N, C, K, G, F]
    kc = fk.reshape(b, n, c, *fk.shape[2:])  # [B, N, C, K, F]
    vc = v.reshape(b, n, c, *v.shape[2:])  # [B, N, C, K, E]
    # State of all earlier chunks: exclusive prefix sums of per-chunk sums.
    state = jnp.einsum("bnckf,bncke->bnkfe", kc, vc)
    state = jnp.cumsum(state, axis=1) - state
    zsum = jnp.sum(kc, axis=2)
    zsum = jnp.cumsum(zsum, axis=1) - zsum  # [B, N, K, F]
    # Inside a chunk: the quadratic form with a lower-triangular mask.
    w = jnp.einsum("bnckgf,bndkf->bnkgcd", qc, kc) * jnp.tril(jnp.ones((c, c), jnp.float32))
    num = jnp.einsum("bnckgf,bnkfe->bnckge", qc, state) + jnp.einsum("bnkgcd,bndke->bnckge", w, vc)
    den = jnp.einsum("bnckgf,bnkf->bnckg", qc, zsum) + jnp.moveaxis(jnp.sum(w, -1), 4, 2)
    out = _safe_divide(num, den).reshape(b, n * c, *num.shape[3:])
    return out[:, :t]


def smooth(kernel: Kernel, q, k, v, *, mask=None, causal=False, impl="xla", segment_ids=None,
           local_window_size=None):
    """The Nadaraya-Watson smoother of `kernel`: [B,T,H,E] x [B,S,K,E] x [B,S,K,E] -> [B,T,H,E]."""
    if kernel.normalized_by_softmax:
        return softmax_smoother(q, k, v, scale=kernel.scale, bias=kernel.key_bias(k), mask=mask,
                                causal=causal, impl=impl, segment_ids=segment_ids,
                                local_window_size=local_window_size)
    if segment_ids is not None:
        seg = segment_mask(segment_ids, segment_ids)
        mask = seg if mask is None else mask & seg
    if local_window_size is not None:  # a band is a mask: the exact (quadratic) form
        band = window_mask(q.shape[1], k.shape[1], local_window_size)
        mask = band if mask is None else mask & band
    if mask is not None and q.shape[1] > 1:  # (one decoding query against a cache: O(T) anyway)
        fast_attention.fallback(
            f"{type(kernel).__name__} attention runs its exact quadratic form, not the linear one",
            "document masking or a sliding window is a mask the O(T) form cannot apply",
            "cost: [B, H, T, S] float32 weights in memory and f32 matmuls")
    return feature_smoother(kernel, q, k, v, mask=mask, causal=causal)


def reference_smoother(kernel: Kernel, q, k, v, mask=None):
    """Literal per-query Nadaraya-Watson average (Alg 3 per query and head); for tests only.

    q [T, H, E], k/v [S, K, E], mask [T, S] bool or None. Kernel values come from the kernel's
    definition (`pairwise`); the weighted averages are a plain numpy loop.
    """
    t, h, _ = q.shape
    g = h // k.shape[1]
    gram = np.asarray(kernel.pairwise(jnp.swapaxes(q, 0, 1),
                                      jnp.repeat(jnp.swapaxes(k, 0, 1), g, axis=0)))  # [H, T, S]
    v = np.asarray(v, np.float64)
    out = np.zeros((t, h, v.shape[-1]))
    for i in range(t):
        for j in range(h):
            w = gram[j, i].astype(np.float64)
            if mask is not None:
                w = np.where(mask[i], w, 0.0)
            out[i, j] = (w[:, None] * v[:, j // g]).sum(0) / w.sum()
    return out


# ----------------------------------------------------------------------------- the module


def _rms_norm(module: nn.Module, name: str, x, eps: float):
    """RMS norm over the head dim of x [B, T, H, E] with a learned scale [E] (float32 stats)."""
    xf = x.astype(jnp.float32)
    y = xf * jax.lax.rsqrt(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) + eps)
    return (y * param(module, name, (x.shape[-1],), ("kv",), init=nn.initializers.ones)).astype(x.dtype)


class MultiHeadAttention(nn.Module):
    """Multi-head attention (Alg 5): H kernel smoothers side by side, then an output mix.

    Self-attention (context None) or cross-attention (keys/values from `context`, Alg 8). K kv
    heads (grouped-query, multi-query when K = 1). RoPE on q/k for self-attention when
    cfg.position == 'rope'. decode=True keeps a KV cache in the 'cache' collection: self-attention
    appends this call's keys/values at `cache_index` (any number of new tokens); cross-attention
    stores the projected context, and reuses it when called with context=None.
    """

    cfg: ModelConfig
    causal: bool = True
    cross: bool = False
    decode: bool = False
    impl: str | None = None  # exp/rbf backend; None: cfg.attention_impl (lm.fast_attention)

    @nn.compact
    def __call__(self, x, context=None, *, positions=None, q_segment_ids=None,
                 kv_segment_ids=None):
        cfg = self.cfg
        dt = compute_dtype(cfg)
        h, kvh, e, d = cfg.num_heads, cfg.kv_heads, cfg.head_size, cfg.d_model
        kernel = make_kernel(cfg)
        x = x.astype(dt)
        bias_init = nn.initializers.zeros
        qkv_bias = cfg.use_bias or cfg.qkv_bias

        if not self.cross and kvh == h:  # one fused projection for q, k and v
            w = param(self, "qkv", (d, 3, h, e), ("embed", None, "heads", "kv"))
            qkv = dense("btd,dnhe->nbthe", x, w, dt)
            if qkv_bias:
                qkv = qkv + param(self, "qkv_bias", (3, h, e), (None, "heads", "kv"),
                                  init=bias_init).astype(dt)[:, None, None]
            q, k, v = qkv[0], qkv[1], qkv[2]
        else:
            q = dense("btd,dhe->bthe", x, param(self, "query", (d, h, e),
                                                ("embed", "heads", "kv")), dt)
            if qkv_bias:
                q = q + param(self, "query_bias", (h, e), ("heads", "kv"), init=bias_init).astype(dt)
            k = v = None
            src = x if not self.cross else context
            if src is not None:
                wkv = param(self, "kv", (d, 2, kvh, e), ("embed", None, "kv_heads", "kv"))
                kv = dense("bsd,dnke->nbske", src.astype(dt), wkv, dt)
                if qkv_bias:
                    kv = kv + param(self, "kv_bias", (2, kvh, e), (None, "kv_heads", "kv"),
                                    init=bias_init).astype(dt)[:, None, None]
                k, v = kv[0], kv[1]
        if cfg.qk_norm:  # per-head RMS norm of queries and keys (Qwen3)
            q = _rms_norm(self, "query_norm", q, cfg.norm_eps)
            k = None if k is None else _rms_norm(self, "key_norm", k, cfg.norm_eps)
        q = nn.with_logical_constraint(q, ("batch", "length", "heads", "kv"))

        mask, causal, segment_ids, local_window_size = None, False, None, None
        impl = self.impl or cfg.attention_impl
        if self.cross:
            if self.decode:
                k, v, kv_segment_ids = self._cross_cache(k, v, kv_segment_ids)
            if kv_segment_ids is not None:
                mask = (segment_mask(q_segment_ids, kv_segment_ids) if q_segment_ids is not None
                        else key_mask(kv_segment_ids, q.shape[1]))
        else:
            if cfg.position == "rope":
                pos = jnp.arange(q.shape[1]) if positions is None else positions
                freq = rope_frequencies(cfg)
                q, k = apply_rope(q, pos, freq=freq), apply_rope(k, pos, freq=freq)
            window = cfg.sliding_window if self.causal else 0
            if self.decode and self.has_variable("cache", "cached_key"):
                k, v, mask = self._self_cache(k, v, window)
                impl = "xla" if impl == "auto" else impl  # one query against a cache
            else:
                if self.decode:  # initialising: create the cache sized by this input
                    self._self_cache(k, v)
                causal = self.causal
                if q_segment_ids is not None:  # the mask is built only where it is used
                    segment_ids = q_segment_ids
                if window:  # sliding window (Mistral): the last `window` keys, this one included
                    local_window_size = (window - 1, 0)
        k = nn.with_logical_constraint(k, ("batch", "length", "kv_heads", "kv"))
        v = nn.with_logical_constraint(v, ("batch", "length", "kv_heads", "kv"))

        out = smooth(kernel, q, k, v, mask=mask, causal=causal, impl=impl,
                     segment_ids=segment_ids, local_window_size=local_window_size)
        out = nn.with_logical_constraint(out, ("batch", "length", "heads", "kv"))
        wo = param(self, "out", (h, e, d), ("heads", "kv", "embed"),
                   std=0.02 / (2 * (cfg.num_layers + (cfg.encoder_layers if cfg.kind != "decoder"
                                                      else 0))) ** 0.5)
        y = dense("bthe,hed->btd", out, wo, dt)
        if cfg.use_bias:
            y = y + param(self, "out_bias", (d,), ("embed",), init=bias_init).astype(dt)
        return y

    def _self_cache(self, k, v, window: int = 0):
        """Append k, v [B, T, K, E] at cache_index; returns all cached keys/values and the mask."""
        is_init = not self.has_variable("cache", "cached_key")
        ck = self.variable("cache", "cached_key", jnp.zeros, k.shape, k.dtype)
        cv = self.variable("cache", "cached_value", jnp.zeros, v.shape, v.dtype)
        ci = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
        if is_init:
            return None
        idx = ci.value
        t, length = k.shape[1], ck.value.shape[1]
        ck.value = jax.lax.dynamic_update_slice(ck.value, k.astype(ck.value.dtype), (0, idx, 0, 0))
        cv.value = jax.lax.dynamic_update_slice(cv.value, v.astype(cv.value.dtype), (0, idx, 0, 0))
        ci.value = idx + t
        return ck.value, cv.value, causal_mask(t, length, offset=idx, window=window)

    def _cross_cache(self, k, v, kv_segment_ids):
        """Store the projected context (when given) or read it back (context=None)."""
        if k is None and not self.has_variable("cache", "cross_key"):
            raise ValueError("cross-attention decoding needs the encoded source on the first call")
        shape = k.shape if k is not None else None
        ck = self.variable("cache", "cross_key", jnp.zeros, shape, k.dtype if k is not None else None)
        cv = self.variable("cache", "cross_value", jnp.zeros, shape, k.dtype if k is not None else None)
        cs = self.variable("cache", "cross_segment_ids", jnp.ones, shape and shape[:2], jnp.int32)
        if k is not None:
            ck.value, cv.value = k, v
            cs.value = (jnp.ones(k.shape[:2], jnp.int32) if kv_segment_ids is None
                        else kv_segment_ids.astype(jnp.int32))
        return ck.value, cv.value, cs.value
