"""Trend fits across the rungs of an experiment: at what compute will the criterion be met?

The continuous surrogate (the validation loss on the criterion's data) is fitted against
training compute C (FLOPs) with a floor term,

    L(C) = floor + a * (C / C0) ** -b,      a >= 0, b >= 0, 0 <= floor <= min(L),

by least squares in log-compute (C0 is the geometric mean of the rungs' compute, so a and b
are well conditioned). The criterion's own metric (accuracy, bits per byte ...) is mapped
to a target surrogate value L* by a straight line through the archived (L, metric) pairs,
and the predicted compute is the C where the fitted L(C) reaches L*. When L* is at or below
the fitted floor (or the fit does not decrease) there is no crossing: "no trend".

We never fit the pass/fail or accuracy metric against compute directly: such metrics jump,
and a fit through them is the known way to get a confidently wrong answer (docs/DESIGN.md).

The interval is a parametric bootstrap: refit on fitted values plus Gaussian noise whose
scale is the largest of the fit's residual, the evaluation noise and 1% of the loss, and report the 10th
and 90th percentiles of the crossing compute over the refits that cross (and the fraction
that cross at all). With two rungs the floor cannot be identified; it is then fixed at 0,
which is the optimistic reading, and the fit says so.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from lm.scaling.fitting import best_fit


@dataclasses.dataclass(frozen=True)
class Trend:
    """L(C) = floor + a * (C / c0) ** -b, fitted on n points."""

    floor: float
    a: float
    b: float
    c0: float
    n: int
    floor_fixed: bool = False

    def __call__(self, compute):
        c = np.asarray(compute, dtype=np.float64)
        return self.floor + self.a * (c / self.c0) ** (-self.b)

    def crossing(self, target: float) -> float | None:
        """Compute where L(C) == target, or None if the trend never gets there."""
        if not (self.a > 0 and self.b > 1e-6) or target <= self.floor:
            return None
        log_c = math.log(self.c0) - math.log((target - self.floor) / self.a) / self.b
        return math.exp(log_c) if log_c < 700 else None  # beyond float range: never


def fit_trend(compute, loss, *, fix_floor: float | None = None, start: Trend | None = None) -> Trend:
    """Least-squares fit of floor + a (C/C0)^-b; the floor is fixed at 0 below three points.

    Three starting floors are tried (0, half and 0.9 of the best loss), or just `start`'s
    (bootstrap refits start from the main fit)."""
    c = np.asarray(compute, dtype=np.float64)
    y = np.asarray(loss, dtype=np.float64)
    if c.shape != y.shape or c.size < 2:
        raise ValueError(f"a trend needs at least two (compute, loss) points, got {c.size}")
    if np.any(c <= 0) or not np.all(np.isfinite(y)) or not np.all(np.isfinite(c)):
        raise ValueError("compute must be positive and losses finite")
    c0 = float(np.exp(np.mean(np.log(c))))
    x = np.log(c / c0)
    if fix_floor is None and c.size < 3:
        fix_floor = 0.0
    y_min = float(np.min(y))

    def unpack(p):
        if fix_floor is None:
            return p[0], p[1], p[2]
        return fix_floor, p[0], p[1]

    def residual(p):
        floor, log_a, b = unpack(p)
        return floor + np.exp(log_a - b * x) - y

    floors = [fix_floor] if fix_floor is not None else [0.0, 0.5 * y_min, 0.9 * y_min]
    if start is not None and fix_floor is None:
        floors = [min(start.floor, 0.999 * y_min)]

    def starts():
        for f0 in floors:
            span = max(float(np.mean(y)) - f0, 1e-6)
            p0 = [math.log(span), 0.3]
            if start is not None and start.a > 0:
                p0 = [math.log(start.a) + start.b * math.log(start.c0 / c0), min(max(start.b, 1e-3), 4.9)]
            lo, hi = [-50.0, 0.0], [50.0, 5.0]
            if fix_floor is None:
                p0, lo, hi = [min(f0, y_min * 0.999)] + p0, [0.0] + lo, [max(y_min, 1e-12)] + hi
            yield p0, lo, hi

    best = best_fit(residual, starts())
    if best is None:
        raise ValueError("trend fit failed")
    floor, log_a, b = unpack(best.x)
    return Trend(float(floor), float(math.exp(log_a)), float(b), c0, int(c.size),
                 floor_fixed=fix_floor is not None)


def metric_map(surrogate, metric):
    """metric ~ alpha + beta * surrogate through the archived points; identity if equal."""
    s = np.asarray(surrogate, dtype=np.float64)
    m = np.asarray(metric, dtype=np.float64)
    if np.allclose(s, m):
        return 0.0, 1.0
    if s.size < 2 or np.ptp(s) < 1e-12:
        return None
    beta, alpha = np.polyfit(s, m, 1)
    return float(alpha), float(beta)


def _target_surrogate(mapping, threshold: float, lower_is_better: bool) -> float | None:
    """The surrogate value at which the mapped metric meets the threshold (None: never)."""
    if mapping is None:
        return None
    alpha, beta = mapping
    # Lower surrogate (loss) must move the metric towards the threshold.
    if abs(beta) < 1e-12 or (beta > 0) != lower_is_better:
        return None
    return (threshold - alpha) / beta


def predict(compute, surrogate, metric, *, threshold: float, lower_is_better: bool,
            noise: float = 0.0, target_compute: float | None = None,
            samples: int = 200, seed: int = 0) -> dict:
    """Fit, map and bootstrap; a JSON-able summary of where the criterion will be met.

    Keys: trend (floor, a, b, c0, n, floor_fixed), target_surrogate, compute_at_threshold
    (None = no trend), interval ([lo, hi] FLOPs or None), p_cross, no_trend, reason, and for
    target_compute: at (compute, surrogate, surrogate_interval, metric, passes).
    """
    c = np.asarray(compute, dtype=np.float64)
    s = np.asarray(surrogate, dtype=np.float64)
    trend = fit_trend(c, s)
    mapping = metric_map(s, metric)
    target = _target_surrogate(mapping, threshold, lower_is_better)
    crossing = trend.crossing(target) if target is not None else None
    out = dict(trend=dataclasses.asdict(trend), surrogate="loss", target_surrogate=target,
               mapping=mapping, compute_at_threshold=crossing, interval=None, p_cross=0.0)

    # Parametric bootstrap around the fit.
    fitted = trend(c)
    dof = max(c.size - (2 if trend.floor_fixed else 3), 1)
    resid = float(np.sqrt(np.sum((s - fitted) ** 2) / dof))
    sigma = max(resid, float(noise), 0.01 * float(np.mean(np.abs(s))))  # >= 1% of the loss
    rng = np.random.default_rng(seed)
    crossings, at_values = [], []
    for _ in range(samples):
        y = fitted + rng.normal(0.0, sigma, size=c.size)
        y = np.maximum(y, 1e-9)
        try:
            t = fit_trend(c, y, fix_floor=0.0 if trend.floor_fixed else None, start=trend)
        except ValueError:
            continue
        x = t.crossing(target) if target is not None else None
        crossings.append(x)
        if target_compute is not None:
            at_values.append(float(t(target_compute)))
    hits = np.array([x for x in crossings if x is not None])
    out["p_cross"] = float(hits.size / max(len(crossings), 1))
    if hits.size:
        lo, hi = np.exp(np.percentile(np.log(hits), [10, 90]))
        out["interval"] = [float(lo), float(hi)]

    if target is None:
        reason = "no trend: the criterion's metric does not move towards the threshold as the loss falls"
    elif crossing is None:
        reason = (f"no trend: the fitted floor {trend.floor:.4g} (loss) is at or above the loss "
                  f"{target:.4g} the criterion needs")
    else:
        reason = f"trend crosses the threshold at about {crossing:.3g} FLOPs"
        if out["interval"]:
            reason += f" (80% bootstrap interval {out['interval'][0]:.3g} to {out['interval'][1]:.3g})"
        if trend.floor_fixed:
            reason += "; two rungs only, floor assumed 0 (optimistic)"
    out["no_trend"] = crossing is None
    out["reason"] = reason

    if target_compute is not None:
        s_at = float(trend(target_compute))
        band = ([float(v) for v in np.percentile(at_values, [10, 90])] if at_values else None)
        m_at = None
        if mapping is not None:
            m_at = mapping[0] + mapping[1] * s_at
        passes = crossing is not None and target_compute >= crossing
        out["at"] = dict(compute=float(target_compute), surrogate=s_at, surrogate_interval=band,
                         metric=m_at, passes=bool(passes))
    return out
