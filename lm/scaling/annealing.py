"""The learning-rate areas of a run: forward area S1 and annealing area S2 at each step.

The annealing law (Tissue et al. 2024, "Scaling Law with Learning Rate Annealing", arXiv
2408.11029): along one run, L(s) = L0 + A S1^-alpha - C S2, with S1 = sum of the LR over the
steps so far and S2 = sum over the steps of a momentum of the LR's decreases,
m_i = lambda m_{i-1} + (eta_{i-1} - eta_i). lm.scaling.law extends it to model size:
L(N, S1, S2) = E + A N^-a + B S1^-b - C S2.

Our units, chosen so that a constant-LR run is exactly what the fits saw before:

- w_i = eta_i / eta_peak, the LR of update i as a share of the peak, from
  lm.optim.learning_rate_schedule itself (one definition of the schedules). The warmup ramp
  counts as the peak (w = 1): a constant-LR run's D has always been its tokens, warmup
  included, and a ramp is a short constant offset that carries no annealing.
- S1 (tokens) = tokens per step x sum of w over the updates done: D for a constant LR.
- S2 (dimensionless) = (1 - lambda) x sum of the momenta = sum_k dw_k (1 - lambda^(s-k+1)):
  the share of the peak LR taken off so far, each decrease counted in full once it is older
  than the momentum's time constant tau = -1 / log(lambda). A finished anneal to
  min_lr_ratio gives S2 of about 1 - min_lr_ratio, whatever the run's length.
- tau is a fixed share of the run's steps, TAU_FRACTION = 2% (lambda = exp(-1 / (0.02 steps))).

Why this normalisation. The paper's lambda ~ 0.999 is per step and its S2 is a raw sum of
momenta: a full anneal then gives S2 ~ drop / (1 - lambda) = 1000 x drop on runs much longer
than 1000 steps, but on a 60-step run only the first few percent of that (the momentum has no
time to build), so C fitted on our 60-2000 step runs would mean nothing on a 100k-step suite
and the other way round. With S2 scaled by (1 - lambda), C is the loss (nats) a finished
anneal takes off, comparable across runs, sizes and suites. With tau a share of the run, an
anneal of a given shape (cosine to 0.1, wsd with a 20% cooldown) realises the same share of
its drop on every rung; at 50k steps tau = 1000 steps, the paper's lambda = 0.999. Short runs
lose nothing of their anneal to a lag they could not have, and long runs keep the paper's.
"""

from __future__ import annotations

import functools
import math
import types

import numpy as np

TAU_FRACTION = 0.02       # the momentum's time constant, as a share of the run's steps
COOLDOWN_FRACTION = 0.2   # wsd: lm.config's default when a record does not store it


def decays(schedule: dict) -> bool:
    """Whether the LR falls during the run (a constant schedule, or none, has no annealing)."""
    return str(schedule.get("name", "constant")) != "constant"


@functools.lru_cache(maxsize=256)
def _fractions(name: str, warmup: int, steps: int, min_lr_ratio: float, cooldown: float) -> np.ndarray:
    from lm.optim import learning_rate_schedule  # lazily: jax and optax, only for decaying schedules

    cfg = types.SimpleNamespace(learning_rate=1.0, steps=steps, warmup_steps=warmup, schedule=name,
                                min_lr_ratio=min_lr_ratio, cooldown_fraction=cooldown)
    lr = np.asarray(learning_rate_schedule(cfg)(np.arange(steps)), dtype=np.float64)
    lr[:min(warmup, steps)] = 1.0  # the ramp counts as the peak (see the module docstring)
    lr.setflags(write=False)
    return lr


def lr_fractions(schedule: dict) -> np.ndarray:
    """w_i = eta_i / eta_peak for updates i = 0 .. steps - 1 (the warmup ramp as 1)."""
    key = _key(schedule)
    return _fractions(*key) if decays(schedule) else np.ones(key[2])


@functools.lru_cache(maxsize=256)
def _profile(key: tuple) -> tuple[np.ndarray, np.ndarray]:
    """(sum of w over the first s updates, S2 after s updates) for s = 0 .. steps."""
    w = _fractions(*key)
    steps = w.size
    lam = math.exp(-1.0 / max(TAU_FRACTION * steps, 1e-9))
    dw = np.concatenate([[0.0], w[:-1] - w[1:]])  # dw[i]: the decrease into update i
    m = np.empty(steps)  # m[i] = lam m[i-1] + dw[i]
    acc = 0.0
    for i in range(steps):
        acc = lam * acc + dw[i]
        m[i] = acc
    # S2 after s updates: sum_{k < s} dw_k (1 - lam^(s-k)) = cumsum(dw)[s-1] - lam m[s-1]
    cum = np.concatenate([[0.0], np.cumsum(w)])
    s2 = np.concatenate([[0.0], np.cumsum(dw) - lam * m])
    return cum, s2


def _key(schedule: dict) -> tuple:
    steps = int(schedule["steps"])
    if steps < 1:
        raise ValueError("a schedule needs at least one step")
    return (str(schedule["name"]), int(schedule.get("warmup_steps", 0) or 0), steps,
            float(schedule.get("min_lr_ratio", 0.0) or 0.0),
            float(schedule.get("cooldown_fraction") or COOLDOWN_FRACTION))


def areas(schedule: dict, tokens: float, at_steps) -> tuple[np.ndarray, np.ndarray]:
    """(S1 in tokens, S2) after `at_steps` updates of a run of `tokens` tokens in all."""
    steps = int(schedule["steps"])
    at = np.clip(np.asarray(at_steps, dtype=np.float64), 0, steps)
    per_step = float(tokens) / steps
    if not decays(schedule):
        return per_step * at, np.zeros_like(at)
    cum, s2 = _profile(_key(schedule))
    idx = np.round(at).astype(int)
    return per_step * cum[idx], s2[idx]


def final_areas(schedule: dict, tokens: float) -> tuple[float, float]:
    """(S1 in tokens, S2) at the end of a planned run of this schedule and these tokens."""
    s1, s2 = areas(schedule, tokens, [int(schedule["steps"])])
    return float(s1[0]), float(s2[0])
