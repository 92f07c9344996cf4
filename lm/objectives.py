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
dpo         (decoder, Rafailov et al. 2023): a batch holds preference pairs as chosen_* and
            rejected_* rows whose weights mark the response tokens. With log-probabilities
            summed over the response, pi (policy) and ref (the frozen starting model),
            z = beta * ((pi_c - ref_c) - (pi_r - ref_r)) and the loss of a pair is
            -(1 - eps) log sigmoid(z) - eps log sigmoid(-z) (eps: label smoothing,
            "conservative DPO"). At step 0, pi = ref, so z = 0 and the loss is ln 2.
            SFT needs no objective of its own: next_token on data whose weights cover only
            the responses (data.source=sft).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

OBJECTIVES = {"next_token": "decoder", "prefix_lm": "encoder_decoder", "dpo": "decoder"}
PAIR_SIDES = ("chosen", "rejected")


def sum_names(objective: str) -> tuple:
    """The keys of the loss sums an objective's step adds up (gradient accumulation)."""
    if objective == "dpo":
        return ("dpo_sum", "pair_sum", "correct_sum", "margin_sum", "chosen_reward_sum",
                "rejected_reward_sum", "chosen_logp_sum", "rejected_logp_sum", "kl_sum", "kl_tokens")
    return ("nll_sum", "z_sum", "weight_sum", "correct_sum")


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


def next_token_sums(model, params, batch: dict, *, document_masking: bool, z_loss: float = 0.0,
                    chunk: int = 0, deterministic: bool = True, rng=None):
    """(cross_entropy_sums, mutated) of the next-token objective; chunk > 0: from the hidden
    states, `chunk` positions at a time, no [B,T,V] f32 logits kept (lm.chunked_loss)."""
    if not chunk:
        logits, targets, weights, mutated = forward(
            model, params, batch, objective="next_token", document_masking=document_masking,
            deterministic=deterministic, rng=rng)
        return cross_entropy_sums(logits, targets, weights, z_loss), mutated
    from lm import chunked_loss
    hidden, mutated = model.apply(
        {"params": params}, batch["inputs"], segment_ids=batch["segment_ids"] if document_masking
        else None, deterministic=deterministic, rngs={"dropout": rng} if rng is not None else {},
        mutable=["losses"], return_hidden=True)
    w, spec = chunked_loss.head(params, model.cfg)
    return chunked_loss.cross_entropy_sums(hidden, w, spec, batch["targets"], batch["weights"],
                                           z_loss, chunk), mutated


def split_batch(batch: dict, objective: str) -> dict:
    """The model inputs, targets and weights of a data batch for the objective."""
    if objective == "next_token":
        return dict(batch)
    if objective == "dpo":  # the weights that count: one per pair with a response
        return {"weights": pair_mask(batch)}
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


# ----------------------------------------------------------------------------- preference pairs

def pair_mask(batch: dict):
    """[B] 1.0 for a real pair, 0.0 for a padding row (no response weight)."""
    return (jnp.sum(batch["chosen_weights"], axis=-1) > 0).astype(jnp.float32)


def _both_sides(batch: dict) -> dict:
    """Chosen rows then rejected rows, as one [2B, T] batch (one model call for both)."""
    return {key: jnp.concatenate([batch[f"{side}_{key}"] for side in PAIR_SIDES])
            for key in ("inputs", "targets", "weights", "segment_ids")}


def response_logprobs(logits, targets, weights):
    """[B] sum of log p(target) over the weighted (response) positions."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.sum(jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0] * weights, axis=-1)


def dpo_sums(model, params, ref_params, batch: dict, *, beta: float, label_smoothing: float = 0.0,
             deterministic: bool = True, rng=None):
    """DPO loss and its diagnostics as sums over pairs (the trainer divides by pair_sum).

    Returns (sums, mutated). Sums: dpo_sum (the loss), pair_sum, correct_sum (pairs with
    z > 0, ties count half: preference accuracy, 0.5 at step 0), margin_sum (z, the reward margin),
    chosen_reward_sum / rejected_reward_sum (beta * log-ratio), chosen_logp_sum /
    rejected_logp_sum (policy), kl_sum and kl_tokens (exact per-token KL(pi || ref) over the
    response positions of both rows).
    """
    rows = _both_sides(batch)
    rngs = {"dropout": rng} if rng is not None else {}
    seg = rows["segment_ids"]
    logits, mutated = model.apply({"params": params}, rows["inputs"], segment_ids=seg,
                                  deterministic=deterministic, rngs=rngs, mutable=["losses"])
    ref_logits = jax.lax.stop_gradient(
        model.apply({"params": ref_params}, rows["inputs"], segment_ids=seg))
    pi = response_logprobs(logits, rows["targets"], rows["weights"])
    ref = response_logprobs(ref_logits, rows["targets"], rows["weights"])
    pi_c, pi_r = jnp.split(pi, 2)
    ref_c, ref_r = jnp.split(ref, 2)
    chosen_reward, rejected_reward = beta * (pi_c - ref_c), beta * (pi_r - ref_r)
    z = chosen_reward - rejected_reward
    loss = -(1.0 - label_smoothing) * jax.nn.log_sigmoid(z) - label_smoothing * jax.nn.log_sigmoid(-z)
    mask = pair_mask(batch)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    ref_logp = jax.nn.log_softmax(ref_logits.astype(jnp.float32), axis=-1)
    kl = jnp.sum(jnp.exp(logp) * (logp - jax.lax.stop_gradient(ref_logp)), axis=-1)
    total = lambda x: jnp.sum(x * mask)
    sums = {
        "dpo_sum": total(loss), "pair_sum": jnp.sum(mask), "correct_sum": total((z > 0) + 0.5 * (z == 0)),  # a tie is a coin flip
        "margin_sum": total(z), "chosen_reward_sum": total(chosen_reward),
        "rejected_reward_sum": total(rejected_reward), "chosen_logp_sum": total(pi_c),
        "rejected_logp_sum": total(pi_r), "kl_sum": jnp.sum(kl * rows["weights"]),
        "kl_tokens": jnp.sum(rows["weights"]),
    }
    return sums, mutated


def dpo_metrics(sums: dict) -> dict:
    """Per-pair figures from summed DPO statistics (train and eval alike)."""
    n = jnp.maximum(sums["pair_sum"], 1.0)
    return {
        "loss": sums["dpo_sum"] / n, "preference_accuracy": sums["correct_sum"] / n,
        "reward_margin": sums["margin_sum"] / n, "chosen_reward": sums["chosen_reward_sum"] / n,
        "rejected_reward": sums["rejected_reward_sum"] / n, "chosen_logp": sums["chosen_logp_sum"] / n,
        "rejected_logp": sums["rejected_logp_sum"] / n,
        "kl": sums["kl_sum"] / jnp.maximum(sums["kl_tokens"], 1.0),
    }
