"""Phase changes: a metric that jumps where the surrogate does not say it should.

Between consecutive evaluations of one run that the law saw (past burn-in), the observed
change of the metric is compared with the change the link predicts from the observed change of
the surrogate (loss, answer NLL): the co-movement the other rungs show. The link is fitted on
the other rungs (on the run itself a steep sigmoid would "explain" its jump after the fact).
A jump is a phase change only when the unexplained part exceeds both

- the eval's own noise, z = 4 standard errors of the difference: the binomial standard error
  sqrt(p (1 - p) / n) where the number of examples n is known, and the scatter of the metric
  about the link on the other rungs (estimated from the data, a robust MAD), and
- a material share of the metric's range across the series (JUMP).

Loss-like metrics are affine in the loss: they cannot jump apart from it, nothing to flag.
"""

from __future__ import annotations

import math

import numpy as np

from lm.scaling import link as link_mod

JUMP = 0.25  # a jump must be this share of the metric's range across the series
Z = 4.0      # ... and this many standard errors of the difference of two evals


def link_scatter(link, loss, metric) -> float:
    """Robust std of the metric about the link (1.4826 MAD of the residuals)."""
    ok = np.isfinite(loss) & np.isfinite(metric)
    if link is None or ok.sum() < 3:
        return 0.0
    r = metric[ok] - link(loss[ok])
    return float(1.4826 * np.median(np.abs(r - np.median(r))))


def _binomial_se(p, n) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    return np.sqrt(p * (1.0 - p) / n) if n and n > 0 else np.zeros_like(p)


def _leave_out_link(runs, r, link):
    others = [o for o in runs if o is not r]
    if len(others) < 2:
        return link, np.concatenate([r.loss]), np.concatenate([r.metric])
    ls = np.concatenate([o.loss for o in others])
    ms = np.concatenate([o.metric for o in others])
    own = link_mod.fit_link(ls, ms, loss_like=False, chance=link.p[0]) or link
    return own, ls, ms


def phase_changes(runs, link) -> list[dict]:
    """Within-run metric jumps, past burn-in, that the observed surrogate does not explain."""
    if link is None or link.kind != "sigmoid":
        return []
    allm = np.concatenate([r.metric[np.isfinite(r.metric)] for r in runs] or [np.zeros(0)])
    if allm.size < 2:
        return []
    floor = max(JUMP * float(np.ptp(allm)), 0.05)
    out = []
    for r in runs:
        idx = np.flatnonzero(r.usable & np.isfinite(r.metric))
        if idx.size < 2:
            continue
        own, ls, ms = _leave_out_link(runs, r, link)
        scatter = link_scatter(own, ls, ms)
        se = _binomial_se(r.metric, r.examples)
        pred = own(r.loss)
        for i, j in zip(idx[:-1], idx[1:]):
            jump = r.metric[j] - r.metric[i]
            unexplained = jump - (pred[j] - pred[i])
            noise = math.sqrt(se[i] ** 2 + se[j] ** 2 + 2.0 * scatter ** 2)
            if abs(jump) < floor or abs(unexplained) < max(Z * noise, floor):
                continue
            out.append(dict(rung=r.name, steps=[int(r.step[i]), int(r.step[j])],
                            metric=[float(r.metric[i]), float(r.metric[j])],
                            surrogate=[float(r.loss[i]), float(r.loss[j])],
                            predicted_metric_change=float(pred[j] - pred[i]), noise=float(noise)))
    return out
