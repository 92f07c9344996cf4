"""Verdicts: what a finished run says about its idea, given the archive it joins.

A miss is `not_yet` unless the evidence excludes a pass: `failed` needs either a diverged run
or a forecast whose most favourable end, at a stated confidence, misses the criterion within a
stated compute budget (BUDGET_FACTOR x the largest rung's compute). Rules (`decide_verdict`),
in this order:

1. broken:       the run crashed or was interrupted before training ended (decided by the
                 runner, lm.experiment; such a record has no metric).
2. inconclusive: the run's final metrics lack the criterion's metric.
3. failed:       the criterion's metric is not finite (the run diverged).
4. passed:       the metric meets the criterion (metric comparator threshold); with several
                 seeds, a mean within seed noise of the threshold says so.
5. inconclusive: this rung cannot meet the criterion at any size (its context is shorter than
                 the task needs, lm.scaling.records.incapable); left out of the fits.
6. not_yet:      the miss is within seed noise of the threshold (a `--seeds=K` record whose
                 mean is within 2 standard errors of it): more seeds or the next rung decide.
7. not_yet:      a first miss: fewer than two rungs of the series at different compute
                 ("no trend yet").
8. not_yet:      the metric's change from the smallest to the largest compute is within noise
                 (2 x the larger of the end runs' eval noise and seed noise): "no trend yet".
9. inverse:      the metric moves away from the threshold as compute grows.
10. not_yet:     the rungs give too few usable evaluations for a scaling fit ("no forecast yet").
11. not_yet:     the forecast flags a phase change and the criterion is possible at all (it
                 does not need a loss <= 0): the metric is not a smooth function of the trend.
12. failed:      the most favourable end of the 90% interval of the best criterion metric
                 attainable within the budget misses the criterion ("excluded at 90% within
                 1000x the largest rung"), printed with the confidence and the budget. Only
                 from MIN_RUNGS_TO_FAIL rungs at different compute: two rungs cannot pin a
                 floor (a law has three or more parameters), so their bound is no evidence.
13. not_yet:     otherwise: a pass within the budget is not excluded (the reason gives the
                 predicted crossing, or the attainable bound).

`attainable` is the forecast's own field (lm.scaling.forecast).
"""

from __future__ import annotations

import math

from lm.archive.records import (eval_noise, finite, lower_is_better, meets, seed_noise,
                                series_key, series_points)
from lm.scaling import forecast
from lm.scaling import records as scaling_records

BUDGET_FACTOR = 1000.0  # failed only if a pass is excluded within this x the largest rung
CONFIDENCE = 0.9        # one-sided: the favourable end of the forecast's 80% two-sided interval
SEED_SIGMAS = 2.0       # "within seed noise": |mean - threshold| <= 2 standard errors
MIN_RUNGS_TO_FAIL = 3   # rungs at different compute before a forecast may say "failed"


def trend_of(points: list[dict], *, target: dict | None = None, samples: int = 100) -> dict | None:
    """The series' forecast (lm.scaling.forecast: L(N, D) on every eval point, or L(C) for records
    without N and D; the link to the metric, crossing, phase changes, and `attainable`: the best
    metric within BUDGET_FACTOR x the largest rung at CONFIDENCE); None when it cannot be fitted.
    target: {n, d, compute} of a run about to start (predicted as "at")."""
    return forecast.forecast(points, target=target, samples=samples, budget_factor=BUDGET_FACTOR)


def seed_band(record: dict) -> float:
    """2 standard errors of a --seeds=K record's mean metric (0 for one seed)."""
    k = len((record.get("seeds") or {}).get("values") or [])
    return SEED_SIGMAS * seed_noise(record) / math.sqrt(k) if k > 1 else 0.0


def _seed_note(record: dict) -> str | None:
    band = seed_band(record)
    crit = record["criterion"]
    if band and abs(record["metric_value"] - crit["threshold"]) <= band:
        k = len(record["seeds"]["values"])
        return (f"within seed noise of the threshold (mean of {k} seeds, std "
                f"{seed_noise(record):.2g}: +-{band:.2g} at 2 standard errors)")
    return None


def decide_verdict(record: dict, archive: list[dict], *, samples: int = 100) -> tuple[str, str, dict | None]:
    """(verdict, reason, trend) for a finished run, given the archive it joins (rules above);
    `samples`: bootstrap refits of the forecast."""
    crit = record["criterion"]
    value = record.get("metric_value")
    metric = f"{crit['split']} {crit['metric']}"
    target = f"{crit['comparator']} {crit['threshold']}"
    if value is None:  # 2
        return "inconclusive", f"the run's final metrics have no {metric}", None
    if not finite(value):  # 3
        return "failed", f"{metric} is {value} (not finite: the run diverged)", None
    note = _seed_note(record)
    if meets(value, crit["comparator"], crit["threshold"]):  # 4
        return "passed", f"{metric} = {value:.4g} {target}" + (f"; {note}" if note else ""), None
    missed = f"{metric} = {value:.4g} misses {target}"
    incapable = scaling_records.incapable(record)
    if incapable:  # 5
        return "inconclusive", (f"{missed}, but this rung cannot meet it at any size ({incapable}); "
                                "left out of the scaling fits"), None
    if note:  # 6
        return "not_yet", f"{missed}, {note}: more seeds or the next rung decide", None
    same = [r for r in archive if series_key(r) == series_key(record) and r.get("id") != record.get("id")]
    points = [p for p in series_points(same + [record]) if not scaling_records.incapable(p)]
    if len({p["train_flops"] for p in points}) < 2:  # 7
        return "not_yet", f"{missed}; first rung of this series: no trend yet (rerun one rung up)", None
    return _decide_trend(points, crit, missed, samples)


def _decide_trend(points: list[dict], crit: dict, missed: str, samples: int) -> tuple[str, str, dict | None]:
    """Rules 7-12: a miss with at least two rungs, judged by the trend across them."""
    first, last = points[0], points[-1]
    sign = 1.0 if lower_is_better(crit["comparator"]) else -1.0
    gain = sign * (first["metric_value"] - last["metric_value"])  # > 0: towards the threshold
    noise = 2.0 * max(eval_noise(first), eval_noise(last), seed_noise(first), seed_noise(last))
    span = f"from {first['metric_value']:.4g} ({first['rung']}) to {last['metric_value']:.4g} ({last['rung']})"
    if abs(gain) <= max(noise, 1e-9):  # 8
        return "not_yet", f"{missed}; change {span} is within noise ({noise:.2g}): no trend yet", None
    if gain < 0:  # 9
        return "inverse", f"{missed}; worse with scale: {span}", None
    trend = trend_of(points, samples=samples)
    if trend is None:  # 10
        return "not_yet", (f"{missed}; improves {span}, but the rungs give too few usable eval "
                           "points for a scaling fit: no forecast yet"), None
    need = trend.get("target_surrogate")
    if trend.get("unpredictable") and not (need is not None and need <= 0):  # 11
        return "not_yet", f"{missed}; improves with scale {span}; {trend['reason']}", trend
    att = trend.get("attainable")
    enough = len({p["train_flops"] for p in points}) >= MIN_RUNGS_TO_FAIL
    if att and enough and not meets(att["bound"], crit["comparator"], crit["threshold"]):  # 12
        return "failed", (f"{missed}; improves {span}, but a pass is excluded at "
                          f"{att['confidence']:.0%} confidence within {BUDGET_FACTOR:.0f}x the "
                          f"largest rung ({att['budget_compute']:.3g} FLOPs): best attainable "
                          f"{_g(att['best'])}, {att['confidence']:.0%} bound {att['bound']:.4g}; "
                          f"{trend['reason']}"), trend
    bound = (f"; {att['confidence']:.0%} bound within {BUDGET_FACTOR:.0f}x: {att['bound']:.4g}" if att
             else "; no interval to exclude a pass with (too few points, or no link to the loss)")
    if att and not enough:
        bound += f" (not evidence yet: {MIN_RUNGS_TO_FAIL} rungs are needed to pin a floor)"
    return "not_yet", f"{missed}; improves with scale {span}; {trend['reason']}{bound}", trend  # 13


def _g(x) -> str:
    return f"{x:.4g}" if finite(x) else "-"
