"""Fused attention backends for the softmax smoother: which one runs, and how it is called.

    xla     jax.nn.dot_product_attention's XLA path (scores materialised; any shape, any dtype)
    cudnn   cuDNN flash attention (GPU; bf16 / fp16; head dim a multiple of 8, <= 128)
    splash  Pallas splash attention (TPU; causal + segment ids; length a multiple of 128)
    einsum  the same math written out (lm.attention); the reference

`model.attention_impl='auto'` picks cudnn on GPU and splash on TPU when the shapes and dtype
allow, xla otherwise and always for KV-cache decoding. An explicit choice is honoured (and
refused with a clear error where it cannot run).

The rbf kernel's per-key bias b_s = -scale |k_s|^2 / 2 rides inside the fused kernels exactly:
q' = [q, 1, 1, 0..], k' = [k, hi_s, lo_s, 0..] with hi + lo = b / scale in two bf16 halves, so
scale q'.k' = scale q.k + b_s to about 2^-16 relative (a single bf16 column would round b to 2^-8,
which at |k|^2 ~ 60 is an error of 0.25 in the score). Columns are padded to a multiple of 8.
"""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from lm.config import ATTENTION_IMPLS as IMPLS, ConfigError
from lm.precision import gpu_capability

CUDNN_MAX_HEAD_DIM = 128  # on every GPU cuDNN flash supports (sm80+); 256 on Hopper (sm90)
SPLASH_BLOCK = 128
QUADRATIC = "cost: [B, H, T, S] scores in memory (O(T^2)) instead of a fused kernel"

log = logging.getLogger(__name__)
_logged: set = set()


def fallback(what: str, why: str, cost: str = QUADRATIC) -> str:
    """Log, once per distinct message, a silent-looking change of path: what, why, its cost."""
    msg = f"{what}: {why}; {cost}"
    if msg not in _logged:
        _logged.add(msg)
        log.warning(msg)
    return msg


def _platform() -> str:
    p = jax.default_backend()
    return "gpu" if p in ("gpu", "cuda", "rocm") else p


def choose(impl: str, *, dtype, head_dim: int, q_len: int, kv_len: int, decode: bool,
           platform: str | None = None) -> str:
    """The backend that runs: 'xla', 'cudnn', 'splash' or 'einsum' (see the module doc)."""
    if impl == "fused":  # the old name of the XLA path
        impl = "xla"
    if impl not in IMPLS:
        raise ConfigError(f"model.attention_impl: {impl!r} is not one of {IMPLS}")
    platform = platform or _platform()
    if impl != "auto":
        return impl
    if decode:
        return "xla"
    if platform == "gpu":
        why = _cudnn_refusal(dtype, head_dim)
        if why is None:
            return "cudnn"
        fallback("attention on GPU runs XLA, not cuDNN flash", why)
    if platform == "tpu":
        if q_len == kv_len or (q_len % SPLASH_BLOCK == 0 and kv_len % SPLASH_BLOCK == 0):
            return "splash"  # self-attention of any length: splash_attention pads T
        fallback("attention on TPU runs XLA, not splash", f"{q_len} queries x {kv_len} keys "
                 f"(cross-attention lengths must be multiples of {SPLASH_BLOCK})")
    return "xla"


def cudnn_max_head_dim() -> int:
    return 256 if (gpu_capability() or 0.0) >= 9.0 else CUDNN_MAX_HEAD_DIM


def _cudnn_refusal(dtype, head_dim: int) -> str | None:
    """Why cuDNN flash attention cannot run here (None: it can)."""
    cap = gpu_capability()
    if cap is not None and cap < 8.0:
        return f"cuDNN flash attention needs sm80+, this GPU is sm{cap:.1f}"
    if jnp.dtype(dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
        return (f"compute dtype {jnp.dtype(dtype).name} (cuDNN flash needs bfloat16/float16: "
                "model.dtype=auto or bfloat16)")
    if head_dim % 8 or head_dim > cudnn_max_head_dim():
        return (f"head_dim {head_dim} (cuDNN flash: a multiple of 8, <= {cudnn_max_head_dim()} "
                "on this GPU; 256 on sm90)")
    try:
        from jax._src.cudnn import fused_attention_stablehlo as fa
        fa.check_cudnn_version()
    except Exception as e:  # no cuDNN in this jaxlib / on this machine
        return f"no usable cuDNN ({type(e).__name__})"
    return None


# ----------------------------------------------------------------------------- rbf bias

def fold_key_bias(q, k, v, bias, scale, prescale: bool = False):
    """(q', k', v', scale'): a per-key bias [B, S, K] folded into extra head-dim columns.

    The columns carry bias / scale, so scale' q'.k' = scale q.k + bias with q left unrounded;
    prescale=True (splash takes no scale) multiplies q by scale instead (exact for E = 4^n).
    """
    dt = q.dtype
    b = bias.astype(jnp.float32) / (1.0 if prescale else scale)
    hi = b.astype(dt)
    lo = (b - hi.astype(jnp.float32)).astype(dt)
    e = q.shape[-1]
    pad = -(e + 2) % 8
    if prescale:
        q, scale = q * jnp.asarray(scale, dt), 1.0
    q2 = jnp.concatenate([q, jnp.ones(q.shape[:-1] + (2,), dt),
                          jnp.zeros(q.shape[:-1] + (pad,), dt)], axis=-1)
    k2 = jnp.concatenate([k, hi[..., None], lo[..., None],
                          jnp.zeros(k.shape[:-1] + (pad,), dt)], axis=-1)
    v2 = jnp.pad(v, [(0, 0)] * 3 + [(0, 2 + pad)])
    return q2, k2, v2, scale


# ----------------------------------------------------------------------------- cuDNN

def cudnn_attention(q, k, v, *, scale, mask=None, causal=False, local_window_size=None,
                    segment_ids=None):
    """cuDNN flash attention; q [B,T,H,E], k/v [B,S,K,E] (GQA handled by cuDNN).

    segment_ids [B,T] (self-attention, documents in contiguous runs): cuDNN's packed layout
    (per-row segment offsets and lengths), so no [B,1,T,T] mask or bias and no dbias.
    """
    if jnp.dtype(q.dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
        raise ConfigError(f"model.attention_impl='cudnn' needs bfloat16 or float16 compute, "
                          f"got {jnp.dtype(q.dtype).name} (set model.dtype=bfloat16)")
    if segment_ids is not None and mask is None and (gpu_capability() or 0.0) < 9.0:
        fallback("document masking on cuDNN uses a [B,1,T,T] mask",
                 "cuDNN's packed segment layout needs sm90 (Hopper)",
                 "cost: a T x T mask and bias per layer (O(T^2) memory, no O(T^2) FLOPs)")
        mask = segment_ids[:, None, :, None] == segment_ids[:, None, None, :]
    if segment_ids is not None and mask is None:
        from jax._src.cudnn import fused_attention_stablehlo as fa
        lengths, offsets = packed_segments(segment_ids)
        kind = fa.MaskType.PADDING_CAUSAL if causal else fa.MaskType.PADDING
        window = None if local_window_size is None else local_window_size[0] + 1
        return fa.dot_product_attention(q, k, v, q_seqlen=lengths, kv_seqlen=lengths,
                                        q_offsets=offsets, kv_offsets=offsets, scale=scale,
                                        mask_type=kind, sliding_window_length=window)
    return jax.nn.dot_product_attention(q, k, v, mask=mask, scale=scale, is_causal=causal,
                                        local_window_size=local_window_size,
                                        implementation="cudnn")


def packed_segments(segment_ids):
    """(lengths [B, T], offsets [B, T + 1]) of the contiguous runs of equal ids in each row,
    left-aligned and -1 past the last run (the layout jax's cuDNN attention takes)."""
    b, t = segment_ids.shape
    pos = jnp.arange(t, dtype=jnp.int32)
    start = jnp.concatenate([jnp.ones((b, 1), bool), segment_ids[:, 1:] != segment_ids[:, :-1]], 1)
    starts = jnp.sort(jnp.where(start, pos, t), axis=1)  # run starts first, then t
    ends = jnp.concatenate([starts[:, 1:], jnp.full((b, 1), t, jnp.int32)], 1)
    real = starts < t
    lengths = jnp.where(real, jnp.minimum(ends, t) - starts, -1).astype(jnp.int32)
    offsets = jnp.concatenate([jnp.where(real, starts, -1), jnp.full((b, 1), -1)], 1)
    return lengths, offsets.astype(jnp.int32)


# ----------------------------------------------------------------------------- splash (TPU)

def splash_attention(q, k, v, *, scale, segment_ids=None, causal=False, local_window_size=None):
    """Pallas splash attention; q [B,T,H,E], k/v [B,S,K,E]; segment_ids [B,T] (self-attention).

    Run per device under shard_map (batch over data/fsdp, heads over tensor): a Mosaic
    kernel cannot be partitioned by XLA.
    """
    b, t, h, e = q.shape
    s, kvh = k.shape[1], k.shape[2]
    if t == s and t % SPLASH_BLOCK:
        return _splash_padded(q, k, v, scale=scale, segment_ids=segment_ids, causal=causal,
                              local_window_size=local_window_size)
    if t % SPLASH_BLOCK or s % SPLASH_BLOCK:
        raise ConfigError(f"model.attention_impl='splash' needs lengths that are multiples of "
                          f"{SPLASH_BLOCK}, got {t} queries, {s} keys")
    q = q * jnp.asarray(scale, q.dtype)
    spec_q = _spec(("batch", None, "heads", None), q.shape, (h, kvh))
    spec_kv = _spec(("batch", None, "kv_heads", None), k.shape, (h, kvh))
    spec_seg = jax.sharding.PartitionSpec(spec_q[0], None)
    run = functools.partial(_splash_local, causal=causal, local_window_size=local_window_size)
    args, specs = (q, k, v), (spec_q, spec_kv, spec_kv)
    if segment_ids is not None:  # self-attention only (q and kv share the ids)
        args, specs = args + (segment_ids.astype(jnp.int32),), specs + (spec_seg,)
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return run(*args)
    return jax.shard_map(run, in_specs=specs, out_specs=spec_q, check_vma=False)(*args)


def _splash_padded(q, k, v, *, scale, segment_ids, causal, local_window_size):
    """Self-attention of a length splash does not take: padded to a multiple of the block, the
    padding in a segment of its own (id -1) that no real query sees, then cut off."""
    t = q.shape[1]
    pad = -t % SPLASH_BLOCK
    fallback("splash attention pads T", f"T={t} is not a multiple of {SPLASH_BLOCK}",
             f"cost: {pad / t:.0%} more attention work on length {t + pad}, no O(T^2) memory")
    grow = lambda x: jnp.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0)))  # noqa: E731
    ids = jnp.ones(q.shape[:2], jnp.int32) if segment_ids is None else segment_ids.astype(jnp.int32)
    ids = jnp.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
    out = splash_attention(grow(q), grow(k), grow(v), scale=scale, segment_ids=ids, causal=causal,
                           local_window_size=local_window_size)
    return out[:, :t]


def _spec(logical, shape, heads):
    """Mesh PartitionSpec of a logical shape under the active rules; axes that do not divide
    (or that split q heads but not kv heads) are dropped."""
    spec = nn.logical_to_mesh_axes(logical)
    mesh = jax.sharding.get_abstract_mesh()
    out = []
    for i, (dim, axes) in enumerate(zip(shape, tuple(spec) + (None,) * len(shape))):
        names = (axes,) if isinstance(axes, str) else tuple(axes or ())
        size = int(np.prod([mesh.shape[a] for a in names])) if names and not mesh.empty else 1
        ok = size == 1 or (dim % size == 0 and (i != 2 or all(n % size == 0 for n in heads)))
        out.append(axes if ok and names else None)
    return jax.sharding.PartitionSpec(*out)


def _splash_local(q, k, v, seg=None, *, causal, local_window_size):
    from jax.experimental.pallas.ops.tpu import splash_attention as sa

    b, t, h, e = q.shape
    s, kvh = k.shape[1], k.shape[2]
    g = h // kvh
    if local_window_size is not None:
        left, right = local_window_size
        one = sa.LocalMask((t, s), (left, 0 if causal else right), offset=0)
    elif causal:
        one = sa.CausalMask((t, s))
    else:
        one = sa.FullMask((t, s))
    kernel = sa.make_splash_mqa_single_device(sa.MultiHeadMask([one] * g))
    # [B, T, K, G, E] -> per batch row, per kv head: q [G, T, E], k/v [S, E]
    qg = q.reshape(b, t, kvh, g, e).transpose(0, 2, 3, 1, 4)
    kk, vv = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)

    def one_row(qr, kr, vr, sr=None):
        ids = None if sr is None else sa.SegmentIds(q=sr, kv=sr)
        return jax.vmap(lambda qh, kh, vh: kernel(qh, kh, vh, segment_ids=ids))(qr, kr, vr)

    rows = (qg, kk, vv) if seg is None else (qg, kk, vv, seg)
    out = jax.vmap(one_row)(*rows)  # [B, K, G, T, E]
    return out.transpose(0, 3, 1, 2, 4).reshape(b, t, h, e)
