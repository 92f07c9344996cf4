"""Next-token cross-entropy from the final hidden states, a chunk of positions at a time.

The plain loss materialises float32 logits [B, T, V] and keeps them (and softmax's output)
for the backward pass: at V = 50k, B = 8, T = 2048 that is 3.3 GB per copy. Here the LM head
matmul, logsumexp, target logit and argmax run on `chunk` positions at a time inside a scan,
each chunk under jax.checkpoint: the forward keeps only per-position scalars, the backward
recomputes one chunk's logits at a time. Largest live buffer: [B, chunk, V] f32.

Same sums as lm.objectives.language.cross_entropy_sums (nll_sum, z_sum, weight_sum, correct_sum); the
head matmul goes through lm.precision.dense like the model's own (bf16 x bf16 -> f32).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax.core import meta

from lm.precision import dense


def head(params, cfg) -> tuple[jax.Array, str]:
    """(unembedding weight, einsum spec from hidden [b,t,d] to logits) of a decoder's params."""
    if cfg.tie_embeddings:
        return meta.unbox(params["embed"]["embedding"]), "btd,vd->btv"
    return meta.unbox(params["unembed"]), "btd,dv->btv"


def _chunk_sums(x, w, spec, targets, weights):
    logits = dense(spec, x, w, x.dtype, jnp.float32)
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    return (jnp.sum((log_z - target_logit) * weights), jnp.sum(jnp.square(log_z) * weights),
            jnp.sum(correct * weights))


def cross_entropy_sums(hidden, w, spec: str, targets, weights, z_loss: float = 0.0,
                       chunk: int = 512) -> dict:
    """hidden [B,T,D] (after the final norm), w the head weight (`head`), targets int [B,T],
    weights f32 [B,T]; `chunk` positions per step (T is padded up to a multiple, weight 0)."""
    b, t, _ = hidden.shape
    chunk = max(1, min(chunk, t))
    pad = -t % chunk
    if pad:
        hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
        targets, weights = (jnp.pad(a, ((0, 0), (0, pad))) for a in (targets, weights))
    n = (t + pad) // chunk
    split = lambda a: jnp.moveaxis(a.reshape((b, n, chunk) + a.shape[2:]), 1, 0)  # noqa: E731
    body = jax.checkpoint(lambda xs: _chunk_sums(xs[0], w, spec, xs[1], xs[2]))

    def step(carry, xs):
        return tuple(c + s for c, s in zip(carry, body(xs))), None

    zero = jnp.zeros((), jnp.float32)
    (nll, z, correct), _ = jax.lax.scan(step, (zero, zero, zero),
                                        (split(hidden), split(targets), split(weights)))
    return {"nll_sum": nll, "z_sum": z_loss * z, "weight_sum": jnp.sum(weights),
            "correct_sum": correct}
