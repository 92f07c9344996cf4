"""Step 2: the criterion's metric as a function of the surrogate loss.

Accuracy-like metrics (accuracy, task exact match ...) saturate, so they are linked by a
sigmoid with the chance level as its floor (as the AI2 model ladders do):

    metric = lo + (hi - lo) * sigmoid(-k (L - L0)),   lo = chance, lo < hi <= 1, k > 0,

fitted by least squares on all (surrogate, metric) pairs of the series (hi fixed at 1 until the
data pass the midpoint: a ceiling the data have not approached is not identified). Loss-like metrics
(loss, bits per byte, excess bits per byte, perplexity) are affine in the loss on one data set,
so they get a straight line (identity when the metric is the loss itself).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from lm.scaling.fitting import best_fit

LOSS_LIKE = ("loss", "bits_per_byte", "excess_bits_per_byte", "perplexity")


def is_loss_like(metric: str) -> bool:
    leaf = metric.rsplit("/", 1)[-1]
    return leaf in LOSS_LIKE or leaf.endswith("nll")


@dataclasses.dataclass(frozen=True)
class Link:
    kind: str             # "linear" | "sigmoid"
    p: tuple              # linear: (alpha, beta); sigmoid: (lo, hi, k, L0)

    def __call__(self, loss):
        s = np.asarray(loss, dtype=np.float64)
        if self.kind == "linear":
            return self.p[0] + self.p[1] * s
        lo, hi, k, l0 = self.p
        return lo + (hi - lo) / (1.0 + np.exp(np.clip(k * (s - l0), -500, 500)))

    def target(self, threshold: float, lower_is_better: bool) -> float | None:
        """The loss at which the metric reaches the threshold, if lowering the loss gets there."""
        if self.kind == "linear":
            alpha, beta = self.p
            if abs(beta) < 1e-12 or (beta > 0) != lower_is_better:
                return None
            return (threshold - alpha) / beta
        lo, hi, k, l0 = self.p
        if lower_is_better or not (lo < threshold < hi) or k <= 0:
            return None  # the sigmoid rises as the loss falls: it meets >= thresholds below hi
        return l0 + math.log((hi - lo) / (threshold - lo) - 1.0) / k

    def describe(self) -> str:
        if self.kind == "linear":
            return f"metric = {self.p[0]:.4g} + {self.p[1]:.4g} L"
        lo, hi, k, l0 = self.p
        return f"metric = {lo:.3g} + ({hi:.3g} - {lo:.3g}) sigmoid(-{k:.3g} (L - {l0:.4g}))"


def fit_link(loss, metric, *, loss_like: bool, chance: float = 0.0, start: Link | None = None) -> Link | None:
    """Fit the link on (surrogate, metric) pairs; None when they cannot determine it. `start`:
    one start from that link (bootstrap refits) instead of the grid."""
    s = np.asarray(loss, dtype=np.float64)
    m = np.asarray(metric, dtype=np.float64)
    ok = np.isfinite(s) & np.isfinite(m)
    s, m = s[ok], m[ok]
    if s.size < 2 or np.ptp(s) < 1e-12:
        return None
    if loss_like:
        if np.allclose(s, m):
            return Link("linear", (0.0, 1.0))
        beta, alpha = np.polyfit(s, m, 1)
        return Link("linear", (float(alpha), float(beta)))
    lo = float(min(chance, m.min()))
    top = max(1.0, float(m.max()))
    # The ceiling is only identified once the data pass the sigmoid's midpoint; before that
    # it is fixed at a perfect score (1), the usual reading of an accuracy.
    free_hi = float(m.max()) > 0.5 * (lo + top)

    def resid(p):
        hi, k, l0 = p if free_hi else (top, *p)
        return Link("sigmoid", (lo, hi, k, l0))(s) - m

    spread = max(float(np.std(s)), 1e-3)

    def starts():
        if start is not None and start.kind == "sigmoid":
            p0 = list(start.p[1:]) if free_hi else list(start.p[2:])
            lb, ub = [lo + 1e-6, 1e-6, s.min() - 10 * spread], [top, 1e4 / spread, s.max() + 10 * spread]
            lb, ub = (lb, ub) if free_hi else (lb[1:], ub[1:])
            yield [min(max(v, a), b) for v, a, b in zip(p0, lb, ub)], lb, ub
            return
        for l0 in np.quantile(s, [0.2, 0.5, 0.8]):
            for k in (1.0 / spread, 5.0 / spread):
                p0 = [min(max(float(m.max()), lo + 1e-3), top), k, float(l0)]
                lb, ub = [lo + 1e-6, 1e-6, s.min() - 10 * spread], [top, 1e4 / spread, s.max() + 10 * spread]
                yield (p0, lb, ub) if free_hi else (p0[1:], lb[1:], ub[1:])

    best = best_fit(resid, starts())
    if best is None:
        return None
    hi, k, l0 = (float(v) for v in (best.x if free_hi else (top, *best.x)))
    return Link("sigmoid", (lo, hi, k, l0))
