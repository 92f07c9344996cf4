"""Language-model objectives: predict the next token, scored per token and per byte.

next_token  (decoder, Phuong & Hutter Alg 13): the model reads `inputs` x_0..x_{T-1} and
            predicts `targets` x_1..x_T at every position where `weights` is 1. SFT needs no
            objective of its own: next_token on data whose weights cover only the responses
            (data.source=sft).
prefix_lm   (encoder-decoder, Alg 12, teacher forcing): each packed sequence is cut in half,
            h = T // 2. The encoder reads the source x_0..x_{h-1}; the decoder reads
            x_h..x_{T-1} (its own previous targets, i.e. teacher forcing, with x_h playing the
            start token) and predicts x_{h+1}..x_T. Only the second half is scored, so its
            bits per byte measure "continue this text given its first half".
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from lm import chunked_loss
from lm.config import ConfigError
from lm.objectives.base import Objective, rngs

LOG2 = math.log(2.0)


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


def split_prefix(batch: dict) -> dict:
    """prefix_lm's view of a packed batch: source = first half, decoder = second half."""
    h = batch["inputs"].shape[1] // 2
    return {
        "src": batch["inputs"][:, :h], "src_segment_ids": batch["segment_ids"][:, :h],
        "inputs": batch["inputs"][:, h:], "segment_ids": batch["segment_ids"][:, h:],
        "targets": batch["targets"][:, h:], "weights": batch["weights"][:, h:],
    }


def _decoder_logits(ctx, params, batch, *, deterministic=True, rng=None):
    """(logits, mutated 'losses' collection): segment ids only with document masking."""
    seg = batch["segment_ids"] if ctx.document_masking else None
    return ctx.model.apply({"params": params}, batch["inputs"], segment_ids=seg,
                           deterministic=deterministic, rngs=rngs(rng), mutable=["losses"])


def _decoder_chunked_sums(ctx, params, batch, *, deterministic=True, rng=None):
    """cross_entropy_sums from the final hidden states, train.loss_chunk positions at a time
    (lm.chunked_loss: no [B,T,V] f32 logits kept for the backward pass)."""
    seg = batch["segment_ids"] if ctx.document_masking else None
    hidden, mutated = ctx.model.apply({"params": params}, batch["inputs"], segment_ids=seg,
                                      deterministic=deterministic, rngs=rngs(rng),
                                      mutable=["losses"], return_hidden=True)
    w, spec = chunked_loss.head(params, ctx.model.cfg)
    return chunked_loss.cross_entropy_sums(hidden, w, spec, batch["targets"], batch["weights"],
                                           float(ctx.train.z_loss), int(ctx.train.loss_chunk)), mutated


def _encoder_decoder_logits(ctx, params, batch, *, deterministic=True, rng=None):
    seg = batch["segment_ids"] if ctx.document_masking else None
    src_seg = batch["src_segment_ids"] if ctx.document_masking else None
    return ctx.model.apply({"params": params}, batch["src"], batch["inputs"], src_segment_ids=src_seg,
                           tgt_segment_ids=seg, deterministic=deterministic, rngs=rngs(rng),
                           mutable=["losses"])


def _token_metrics(sums, weight, train=None):
    return {"loss": sums["nll_sum"] / weight, "z_loss": sums["z_sum"] / weight,
            "accuracy": sums["correct_sum"] / weight}


def token_eval_metrics(sums: dict, train=None) -> dict:
    """Per-token and per-byte figures from summed eval statistics."""
    w = max(float(sums["weight_sum"]), 1e-9)
    loss = float(sums["nll_sum"]) / w
    return {
        "loss": loss,
        "bits_per_byte": float(sums["nll_sum"]) / LOG2 / max(float(sums["byte_sum"]), 1e-9),
        "perplexity": math.exp(min(loss, 700.0)),
        "accuracy": float(sums["correct_sum"]) / w,
        "tokens": int(round(float(sums["weight_sum"]))),
        "bytes": int(round(float(sums["byte_sum"]))),
    }


def _figures(f: dict) -> str:
    return (f"valid loss {f['loss']:.4f} nats/token, {f['bits_per_byte']:.4f} bits/byte, "
            f"perplexity {f['perplexity']:.2f}, accuracy {f['accuracy']:.3f}")


def language_objective(name, model_kind, view, logits_fn, init_args, check=None,
                       chunked_sums=None) -> Objective:
    """A token-level objective: `view` picks what is scored from a packed batch, `logits_fn`
    runs the model on that view; `chunked_sums` (train.loss_chunk > 0) trains without logits."""
    def train_sums(ctx, params, ref, batch, *, deterministic=True, rng=None):
        b = view(batch)
        if chunked_sums is not None and ctx.train.loss_chunk:
            return chunked_sums(ctx, params, b, deterministic=deterministic, rng=rng)
        logits, mutated = logits_fn(ctx, params, b, deterministic=deterministic, rng=rng)
        return cross_entropy_sums(logits, b["targets"], b["weights"], float(ctx.train.z_loss)), mutated

    def eval_sums(ctx, params, ref, batch):
        b = view(batch)
        logits, _ = logits_fn(ctx, params, b)
        sums = cross_entropy_sums(logits, b["targets"], b["weights"])
        del sums["z_sum"]
        sums["byte_sum"] = jnp.sum(jnp.asarray(ctx.token_bytes)[b["targets"]] * b["weights"])
        return sums

    return Objective(
        name=name, model_kind=model_kind, reads_pairs=False, keeps_reference=False,
        sum_names=("nll_sum", "z_sum", "weight_sum", "correct_sum"), init_args=init_args,
        batch_weight=lambda batch: jnp.sum(view(batch)["weights"]),
        train_sums=train_sums, loss_sum=lambda sums, train: sums["nll_sum"] + sums["z_sum"],
        train_metrics=_token_metrics, eval_sums=eval_sums, eval_metrics=token_eval_metrics,
        metrics=("loss", "bits_per_byte", "perplexity", "accuracy"), headline="bits_per_byte",
        figures=_figures, **({"check": check} if check else {}))


def _check_prefix(config, model_cfg) -> None:
    if model_cfg.max_len < 2:
        raise ConfigError("model.max_len: prefix_lm needs at least 2 tokens to split")


NEXT_TOKEN = language_objective(
    "next_token", "decoder", view=lambda batch: batch, logits_fn=_decoder_logits,
    init_args=lambda batch: (batch["inputs"],), chunked_sums=_decoder_chunked_sums)
PREFIX_LM = language_objective(
    "prefix_lm", "encoder_decoder", view=split_prefix, logits_fn=_encoder_decoder_logits,
    init_args=lambda batch: (split_prefix(batch)["src"], split_prefix(batch)["inputs"]),
    check=_check_prefix)

ENTRIES = (NEXT_TOKEN, PREFIX_LM)
