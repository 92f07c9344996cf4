"""Preference objectives: a batch holds pairs as chosen_* and rejected_* rows (data.source=preference)
whose weights mark the response tokens; the starting model is kept frozen as the reference.

dpo  (Rafailov et al. 2023). With log-probabilities summed over the response, pi (policy) and
     ref (the frozen starting model), z = beta * ((pi_c - ref_c) - (pi_r - ref_r)) and the loss
     of a pair is -(1 - eps) log sigmoid(z) - eps log sigmoid(-z) (eps: label smoothing,
     "conservative DPO"). At step 0, pi = ref, so z = 0 and the loss is ln 2.
rpo  DPO plus an SFT term on the chosen answer (Pang et al. 2024, "Iterative Reasoning
     Preference Optimization"): loss = dpo + alpha * (-pi_c / |y_c|), the chosen answer's
     negative log-likelihood per token (alpha: train.rpo_alpha). DPO alone can push rejected
     answers down more than it pulls chosen ones up (experiments/dpo_sorted.py); the SFT term
     keeps the chosen answer's likelihood rising.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lm.config import ConfigError
from lm.objectives.base import Objective, rngs

PAIR_SIDES = ("chosen", "rejected")


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
    rejected_logp_sum (policy), chosen_nll_sum (the chosen answer's NLL per token), kl_sum and
    kl_tokens (exact per-token KL(pi || ref) over the response positions of both rows).
    """
    rows = _both_sides(batch)
    seg = rows["segment_ids"]
    logits, mutated = model.apply({"params": params}, rows["inputs"], segment_ids=seg,
                                  deterministic=deterministic, rngs=rngs(rng), mutable=["losses"])
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
    chosen_tokens = jnp.maximum(jnp.sum(batch["chosen_weights"], axis=-1), 1.0)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    ref_logp = jax.nn.log_softmax(ref_logits.astype(jnp.float32), axis=-1)
    kl = jnp.sum(jnp.exp(logp) * (logp - jax.lax.stop_gradient(ref_logp)), axis=-1)
    total = lambda x: jnp.sum(x * mask)
    sums = {
        "dpo_sum": total(loss), "pair_sum": jnp.sum(mask), "correct_sum": total((z > 0) + 0.5 * (z == 0)),  # a tie is a coin flip
        "margin_sum": total(z), "chosen_reward_sum": total(chosen_reward),
        "rejected_reward_sum": total(rejected_reward), "chosen_logp_sum": total(pi_c),
        "rejected_logp_sum": total(pi_r), "chosen_nll_sum": total(-pi_c / chosen_tokens),
        "kl_sum": jnp.sum(kl * rows["weights"]), "kl_tokens": jnp.sum(rows["weights"]),
    }
    return sums, mutated


SUM_NAMES = ("dpo_sum", "pair_sum", "correct_sum", "margin_sum", "chosen_reward_sum",
             "rejected_reward_sum", "chosen_logp_sum", "rejected_logp_sum", "chosen_nll_sum",
             "kl_sum", "kl_tokens")


def _dpo_loss(sums, train):
    return sums["dpo_sum"]


def _metrics(loss_sum):
    """Per-pair figures from summed statistics, train and eval alike; `loss` is what the
    objective minimises (`loss_sum`), dpo_loss the DPO part of it."""
    def metrics(sums, weight=None, train=None):
        n = jnp.maximum(sums["pair_sum"], 1.0)
        return {
            "loss": loss_sum(sums, train) / n, "dpo_loss": sums["dpo_sum"] / n,
            "preference_accuracy": sums["correct_sum"] / n, "reward_margin": sums["margin_sum"] / n,
            "chosen_reward": sums["chosen_reward_sum"] / n,
            "rejected_reward": sums["rejected_reward_sum"] / n,
            "chosen_logp": sums["chosen_logp_sum"] / n, "rejected_logp": sums["rejected_logp_sum"] / n,
            "chosen_nll": sums["chosen_nll_sum"] / n,
            "kl": sums["kl_sum"] / jnp.maximum(sums["kl_tokens"], 1.0),
        }

    def eval_metrics(sums, train=None):
        out = {k: float(v) for k, v in metrics(sums, None, train).items()}
        return {**out, "pairs": int(round(float(sums["pair_sum"])))}
    return metrics, eval_metrics


def _figures(f: dict) -> str:
    return (f"valid loss {f['loss']:.4f} (DPO part {f['dpo_loss']:.4f}), preference accuracy "
            f"{f['preference_accuracy']:.3f}, reward margin {f['reward_margin']:.3f}, "
            f"KL {f['kl']:.4f} nats/token")


def _check_dpo(config, model_cfg) -> None:
    t = config.train
    if not (t.dpo_beta > 0 and 0 <= t.dpo_label_smoothing < 0.5):
        raise ConfigError(f"train.dpo_beta={t.dpo_beta} must be > 0 and train.dpo_label_smoothing="
                          f"{t.dpo_label_smoothing} in [0, 0.5)")


def preference_objective(name, loss_sum, check=_check_dpo) -> Objective:
    """A pair objective over dpo_sums: only what it minimises (`loss_sum`) differs."""
    def train_sums(ctx, params, ref, batch, *, deterministic=True, rng=None):
        return dpo_sums(ctx.model, params, ref, batch, beta=float(ctx.train.dpo_beta),
                        label_smoothing=float(ctx.train.dpo_label_smoothing),
                        deterministic=deterministic, rng=rng)

    metrics, eval_metrics = _metrics(loss_sum)
    return Objective(
        name=name, model_kind="decoder", reads_pairs=True, keeps_reference=True,
        sum_names=SUM_NAMES, init_args=lambda batch: (batch["inputs"],),
        batch_weight=pair_mask_sum, train_sums=train_sums, loss_sum=loss_sum,
        train_metrics=metrics, eval_sums=lambda ctx, p, ref, batch: train_sums(ctx, p, ref, batch)[0],
        eval_metrics=eval_metrics,
        metrics=("loss", "preference_accuracy", "reward_margin", "chosen_logp", "kl"),
        headline="preference_accuracy", figures=_figures, check=check)


def pair_mask_sum(batch):
    return jnp.sum(pair_mask(batch))


DPO = preference_objective("dpo", _dpo_loss)


def _check_rpo(config, model_cfg) -> None:
    _check_dpo(config, model_cfg)
    if not config.train.rpo_alpha >= 0:
        raise ConfigError(f"train.rpo_alpha={config.train.rpo_alpha}: must be >= 0")


RPO = preference_objective(
    "rpo", lambda sums, train: sums["dpo_sum"] + float(train.rpo_alpha) * sums["chosen_nll_sum"],
    check=_check_rpo)

ENTRIES = (DPO, RPO)
