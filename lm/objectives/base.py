"""What an objective is: one record the trainer and evaluation read, never its name.

Losses are SUMS over weighted targets (with the weight sum alongside), never means: the trainer
divides once by the weight of the whole global batch (`batch_weight`), so gradient accumulation
and sharding give the same number as one big batch, and evaluation adds sums across batches to
get exact per-token, per-byte or per-pair figures.
"""

from __future__ import annotations

import dataclasses
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Context:
    """What an objective's sums read besides params and batch: fixed for a whole run."""

    model: object  # the flax module
    train: object  # config.train (z_loss, dpo_beta, ... : the objective's own settings)
    document_masking: bool  # attention stays inside each packed document
    token_bytes: object = None  # [V] bytes each token stands for (eval: bits per byte)


@dataclasses.dataclass(frozen=True)
class Objective:
    """One training objective (config train.objective = name).

    train_sums(ctx, params, ref, batch, *, deterministic, rng) -> (sums, mutated collections)
    eval_sums(ctx, params, ref, batch) -> sums          (ref: the frozen reference, or None)
    loss_sum(sums, train)                                 what the step minimises (divided by the weight)
    batch_weight(batch)                                   the weight of a whole global batch
    train_metrics(sums, weight, train)                    the logged figures (arrays, in the step)
    eval_metrics(sums, train)                             per-token or per-pair figures (host floats)
    (train: config.train, where an objective's own settings live)
    """

    name: str
    model_kind: str  # the model it trains: "decoder" | "encoder_decoder"
    reads_pairs: bool  # its batches are preference pairs (data.source=preference)
    keeps_reference: bool  # a frozen copy of the starting params travels (and is saved) with the state
    sum_names: tuple  # the keys of train_sums (gradient accumulation adds them up)
    init_args: Callable  # packed dummy batch -> the positional arguments of model.init
    batch_weight: Callable
    train_sums: Callable
    loss_sum: Callable
    train_metrics: Callable
    eval_sums: Callable
    eval_metrics: Callable
    metrics: tuple  # the eval metrics it reports, which an experiment criterion may name
    headline: str  # the one eval metric the progress bar shows
    figures: Callable  # final eval metrics -> the valid figures of the line `lm train` prints
    check: Callable = lambda config, model_cfg: None  # its own settings: raise ConfigError


def rngs(rng) -> dict:
    return {"dropout": rng} if rng is not None else {}
