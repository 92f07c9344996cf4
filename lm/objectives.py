"""Training objectives: what the model sees, what it predicts, and the summed losses.

Losses are returned as SUMS over weighted target tokens (with the weight sum alongside),
never as means: the trainer divides once by the weight of the whole global batch, so
gradient accumulation and sharding give the same number as one big batch, and evaluation
can add sums across batches to get exact per-token and per-byte figures.

Objectives (config train.objective):

next_token  (decoder, Phuong & Hutter Alg 13): the model reads `inputs` x_0..x_{T-1} and
            predicts `targets` x_1..x_T at every position where `weights` is 1.
prefix_lm   (encoder-decoder, Alg 12, teacher forcing): each packed sequence is cut in half,
            h = T // 2. The encoder reads the source x_0..x_{h-1}; the decoder reads
            x_h..x_{T-1} (its own previous targets, i.e. teacher forcing, with x_h playing the
            start token) and predicts x_{h+1}..x_T. Only the second half is scored, so its
            bits per byte measure "continue this text given its first half".
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

OBJECTIVES = {"next_token": "decoder", "prefix_lm": "encoder_decoder"}


def cross_entropy_sums(logits, targets, weights, z_loss: float = 0.0) -> dict:
    """Weighted next-token cross-entropy (nats), as sums.

    logits f32 [B,T,V], targets int [B,T], weights f32 [B,T]. Returns nll_sum (sum of
    -log p(target) * weight), z_sum (sum of log(Z)^2 * weight: the PaLM z-loss, which keeps
    the softmax normaliser near 1, scaled by `z_loss`), weight_sum and correct_sum (weighted
    count of argmax == target).
    """
    logits = logits.astype(jnp.float32)
    log_z = jax.nn.logsumexp(logits, axis=-1)  # [B,T]
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    nll = log_z - target_logit
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    return {
        "nll_sum": jnp.sum(nll * weights),
        "z_sum": z_loss * jnp.sum(jnp.square(log_z) * weights),
        "weight_sum": jnp.sum(weights),
        "correct_sum": jnp.sum(correct * weights),
    }


def split_batch(batch: dict, objective: str) -> dict:
    """The model inputs, targets and weights of a data batch for the objective."""
    if objective == "next_token":
        return dict(batch)
    if objective == "prefix_lm":
        h = batch["inputs"].shape[1] // 2
        return {
            "src": batch["inputs"][:, :h], "src_segment_ids": batch["segment_ids"][:, :h],
            "inputs": batch["inputs"][:, h:], "segment_ids": batch["segment_ids"][:, h:],
            "targets": batch["targets"][:, h:], "weights": batch["weights"][:, h:],
        }
    raise ValueError(f"train.objective: unknown objective {objective!r}; "
                     f"choose from {sorted(OBJECTIVES)}")


def forward(model, params, batch: dict, *, objective: str, document_masking: bool,
            deterministic: bool = True, rng=None):
    """Run the model on a batch. Returns (logits, targets, weights, mutated collections).

    `mutated` holds the 'losses' collection (MoE auxiliary losses) sown during the pass.
    Segment ids are passed only with document masking (otherwise attention is plainly causal).
    """
    b = split_batch(batch, objective)
    rngs = {"dropout": rng} if rng is not None else {}
    seg = b["segment_ids"] if document_masking else None
    if objective == "next_token":
        logits, mutated = model.apply(
            {"params": params}, b["inputs"], segment_ids=seg, deterministic=deterministic,
            rngs=rngs, mutable=["losses"])
    else:
        src_seg = b["src_segment_ids"] if document_masking else None
        logits, mutated = model.apply(
            {"params": params}, b["src"], b["inputs"], src_segment_ids=src_seg,
            tgt_segment_ids=seg, deterministic=deterministic, rngs=rngs, mutable=["losses"])
    return logits, b["targets"], b["weights"], mutated
