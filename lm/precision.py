"""The dtype policy: what runs in bfloat16, what stays float32, and where that is enforced.

    parameters, optimizer state, norms, softmax statistics, logits, loss   float32
    activations and the operands of every big matmul                       compute dtype

`model.dtype='auto'` (the default) is bfloat16 on GPU and TPU and float32 on CPU (where bf16
has no fast matmul and existing CPU numbers stay exactly as they were).

Matmuls with a float32 parameter go through `dense`: both operands in the compute dtype,
accumulation and result in float32 (preferred_element_type), and the same in the backward
pass. Plain autodiff would not give that: the cotangent of an f32 result is f32, and a
mixed f32 x bf16 dot is promoted to f32 x f32 on GPU (the two LM-head backward matmuls
were). `dense`'s weight gradient is float32 out of the dot, so its reduction across the
batch shards (data / fsdp) is float32 too.

Every `dense` output is tagged `MATMUL` (jax.ad_checkpoint.checkpoint_name): the bf16 path is
a custom_vjp, one opaque primitive to a remat policy, so `remat='dots'` saves by this name
(a dot-matching policy would see no dot and recompute every projection).
"""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax.ad_checkpoint import checkpoint_name

MATMUL = "matmul"  # the checkpoint name of every weight matmul's output (remat='dots' saves it)

log = logging.getLogger(__name__)
_logged: set = set()


def gpu_capability() -> float | None:
    """The CUDA compute capability of the first device (8.0 A100, 9.0 H100), None when it is
    not an NVIDIA GPU (a CPU lowering for "cuda" included: then nothing older is assumed)."""
    try:
        dev = jax.devices()[0]
        return float(dev.compute_capability) if dev.platform == "gpu" else None
    except Exception:  # no such attribute (ROCm) or no device
        return None


def resolve_dtype(name: str, platform: str | None = None) -> str:
    """'auto' -> 'bfloat16' on gpu / tpu, 'float32' on cpu and on GPUs older than sm80 (a T4
    or V100 has no bf16 matmul); other names unchanged."""
    if name != "auto":
        return name
    platform = platform or jax.default_backend()
    if platform in ("gpu", "cuda") and (gpu_capability() or 8.0) < 8.0:
        msg = (f"model.dtype=auto: float32 on this sm{gpu_capability():.1f} GPU (bf16 needs "
               "sm80+); cost: about 2x the activation memory and no cuDNN flash attention")
        if msg not in _logged:
            _logged.add(msg)
            log.warning(msg)
        return "float32"
    return "bfloat16" if platform in ("gpu", "cuda", "rocm", "tpu") else "float32"


def compute_dtype(cfg):
    """The jnp dtype activations run in, for a ModelConfig (or anything with .dtype)."""
    return jnp.bfloat16 if resolve_dtype(cfg.dtype) == "bfloat16" else jnp.float32


def _operands(spec: str):
    ins, out = spec.replace(" ", "").split("->")
    a, b = ins.split(",")
    return a, b, out


def dense(spec: str, x, w, dt, out_dtype=None):
    """einsum(spec, x, w) with x in compute dtype dt and w a float32 parameter.

    float32 compute: the plain einsum (bit-identical to before). Otherwise bf16 x bf16 with
    float32 accumulation forward and backward; the result is cast to out_dtype (default dt),
    dx to x's dtype, dw stays float32.
    """
    out_dtype = out_dtype or dt
    if jnp.dtype(dt) == jnp.float32:
        return checkpoint_name(jnp.einsum(spec, x, w, preferred_element_type=jnp.float32), MATMUL)
    return checkpoint_name(_dense(spec, jnp.dtype(dt), jnp.dtype(out_dtype), x.astype(dt), w),
                           MATMUL)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _dense(spec, dt, out_dtype, x, w):
    return jnp.einsum(spec, x, w.astype(dt), preferred_element_type=jnp.float32).astype(out_dtype)


def _dense_fwd(spec, dt, out_dtype, x, w):
    return _dense(spec, dt, out_dtype, x, w), (x, w)


def _dense_bwd(spec, dt, out_dtype, res, g):
    x, w = res
    a, b, c = _operands(spec)
    g = g.astype(dt)
    dx = jnp.einsum(f"{c},{b}->{a}", g, w.astype(dt), preferred_element_type=jnp.float32)
    dw = jnp.einsum(f"{a},{c}->{b}", x, g, preferred_element_type=jnp.float32)
    return dx.astype(x.dtype), dw.astype(w.dtype)


_dense.defvjp(_dense_fwd, _dense_bwd)


def embed_lookup(table, tokens, dt):
    """Rows of a float32 [V, D] table for int tokens, in dt.

    The table is cast to dt BEFORE it is replicated for the gather (half the all-gather of
    an f32 table), and the gradient is scattered into a float32 table (reduced in f32).
    float32 compute: the plain gather, as before.
    """
    if jnp.dtype(dt) == jnp.float32:
        table = nn.with_logical_constraint(table, (None, None))
        return jnp.take(table, tokens, axis=0)
    return _embed(jnp.dtype(dt), tuple(table.shape), table, tokens)


def _gather(dt, table, tokens):
    # Gather from the whole table: a gather from a vocab- or embed-sharded table cannot be
    # resharded to batch-sharded rows efficiently (XLA rematerialises it on every device).
    table = nn.with_logical_constraint(table.astype(dt), (None, None))
    return jnp.take(table, tokens, axis=0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _embed(dt, shape, table, tokens):
    return _gather(dt, table, tokens)


def _embed_fwd(dt, shape, table, tokens):
    return _gather(dt, table, tokens), tokens


def _embed_bwd(dt, shape, tokens, g):
    grad = jnp.zeros(shape, jnp.float32).at[tokens].add(g.astype(jnp.float32))
    grad = nn.with_logical_constraint(grad, ("vocab", "embed"))
    return grad, np.zeros(tokens.shape, jax.dtypes.float0)


_embed.defvjp(_embed_fwd, _embed_bwd)
