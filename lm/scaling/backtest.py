"""Backtests: would the forecasts have been right about the rungs that were run?

A series' runs are grouped into compute levels (a ladder: one rung per level; a sweep: a
factor 2 of compute each). Every level h from the third on is held out and predicted from each
prefix of the smaller levels (at least two): "next rung" when the prefix ends just below h,
"extrapolation" x C_h / C_prefix_top otherwise. One forecast per prefix predicts every held-out
run. Recipe variants (a reproduction at a rung's compute, another schedule) are their own
series over the smaller rungs (lm.scaling.runs.recipes): only the variant is held out there.

Per prediction: loss error % (predicted final surrogate vs what the run got), whether the 80%
interval covered it and its width, metric error, and, when some rung passes the criterion but
none in the prefix does, the crossing factor (on the row holding out the cheapest passing
rung): predicted crossing compute / that rung's compute.

Goals (issue 25): next-rung loss within 3% (median), >= 8x extrapolation within 8%, crossing
within x2, 80% intervals covering 70-90% of held-out truths (the median width beside it). A
forecast flagged "unpredictable (phase change)" counts as a miss in every goal.
"""

from __future__ import annotations

import math

import numpy as np

from lm.scaling import forecast as fc
from lm.scaling import runs as runs_mod
from lm.scaling.fitting import one_blas_thread

GOALS = dict(next_rung_pct=3.0, extrap_8x_pct=8.0, crossing_factor=2.0, coverage=(0.70, 0.90))


def passes(value, crit) -> bool:
    if value is None or not math.isfinite(value):
        return False
    t, c = float(crit["threshold"]), crit.get("comparator", "<=")
    return {"<=": value <= t, "<": value < t, ">=": value >= t, ">": value > t}[c]


def _row(held, top_compute, next_rung, prefix_names, f, at) -> dict:
    row = dict(rung=held.name, from_rungs=prefix_names, factor=held.compute / top_compute,
               next_rung=next_rung, actual_loss=held.final_loss, actual_metric=held.final_metric)
    lo, hi = at["surrogate_interval"]
    m = at["metric"]
    row.update(E=f["law"]["E"], resid=f["law"]["resid"], pred_loss=at["surrogate"],
               loss_err_pct=100.0 * (at["surrogate"] - held.final_loss) / held.final_loss,
               covered=bool(lo <= held.final_loss <= hi), interval=[lo, hi],
               width_pct=100.0 * (hi - lo) / held.final_loss, pred_metric=m,
               unpredictable=f["unpredictable"],
               metric_err=(m - held.final_metric if m is not None and math.isfinite(held.final_metric) else None))
    return row


def backtest_levels(s, levels: list[list], *, only=None, samples: int = 60, seed: int = 0) -> list[dict]:
    """Rows for one series (a forecast.Series) whose runs are grouped in compute levels
    (cheapest first); `only`: hold out just these runs (their ids)."""
    c_pass = min((r.compute for lv in levels for r in lv if passes(r.final_metric, s.crit)), default=None)
    rows = []
    for j in range(2, len(levels)):
        prefix = [r for lv in levels[:j] for r in lv]
        held = [(h, r) for h in range(j, len(levels)) for r in levels[h] if only is None or id(r) in only]
        if not held:
            continue
        sub = fc.Series(**{**s.__dict__, "runs": prefix, "per_n": len({r.n for r in prefix}) < 2})
        # each held-out run at its own schedule's areas (a recipe variant may anneal differently)
        targets = [dict(n=r.n, d=r.d_final, compute=r.compute, s1=r.s1_final, s2=r.s2_final) for _, r in held]
        f = fc._forecast(sub, None, samples, seed, fc.BUDGET_FACTOR, targets=targets) if len(
            {(r.n, r.d_final) for r in prefix}) >= 2 else None
        top_c = max(r.compute for r in prefix)
        names = [r.name for r in prefix]
        prefix_passes = any(passes(r.final_metric, s.crit) for r in prefix)
        for k, (h, r) in enumerate(held):
            if f is None:
                rows.append(dict(rung=r.name, from_rungs=names, factor=r.compute / top_c,
                                 next_rung=h == j, error="no fit"))
                continue
            row = _row(r, top_c, h == j, names, f, f["at_each"][k])
            # a prefix's crossing does not depend on the held-out rung: scored once, on the row
            # that holds out the cheapest passing rung
            if c_pass is not None and not prefix_passes and r.compute == c_pass:
                x = f.get("compute_at_threshold")
                row.update(crossing_factor=(x / c_pass) if x else math.inf, actual_crossing=c_pass,
                           pred_crossing=x)
            rows.append(row)
    return rows


def backtest(points: list[dict], *, samples: int = 60, seed: int = 0) -> list[dict]:
    """Rows (one per held-out rung x fit prefix) for one series' points (archive.series_points):
    its main ladder, then each recipe variant over the smaller rungs."""
    rows = []
    with one_blas_thread():
        for label, pts in runs_mod.recipes(points):
            s = fc._series(pts)
            if s is None:
                continue
            runs = sorted(s.runs, key=lambda r: r.compute)
            if len(runs) < 3:
                continue
            only = None if not label else {id(runs[-1])}
            got = backtest_levels(s, [[r] for r in runs], only=only, samples=samples, seed=seed)
            losses = [r.final_loss for r in runs if r.final_loss > 0]
            span = max(losses) / min(losses) if losses else 1.0
            rows += [dict(r, recipe=label, series_loss_span=span) for r in got]
    return rows


# A series whose surrogate falls more than this factor across its rungs is learning a task (its
# loss heads for 0, faster than any power law with a floor): reported apart from smooth ones.
COLLAPSE = 10.0


def collapses(rows: list[dict]) -> bool:
    """Whether the series' rungs span more than COLLAPSE x in final surrogate (backtest's rows)."""
    return any(r.get("series_loss_span", 1.0) > COLLAPSE for r in rows)


def _median(xs):
    return float(np.median(xs)) if xs else None


def summarize(rows: list[dict]) -> dict:
    """Median |errors|, coverage and width, and which goals are met (None where no row measures
    it). Flagged forecasts (phase change) are misses: infinite error, not covered."""
    fitted = [r for r in rows if "loss_err_pct" in r]

    def err(r):
        return math.inf if r["unpredictable"] else abs(r["loss_err_pct"])

    nxt = [err(r) for r in fitted if r["next_rung"]]
    far = [err(r) for r in fitted if r["factor"] >= 8.0 - 1e-9]
    cross = [math.inf if r["unpredictable"] else r["crossing_factor"] for r in fitted if "crossing_factor" in r]
    cross_err = [max(x, 1.0 / x) if 0 < x < math.inf else math.inf for x in cross]
    cov = [r["covered"] and not r["unpredictable"] for r in fitted]
    out = dict(predictions=len(fitted), next_rung_pct=_median(nxt), next_rung_n=len(nxt),
               next_rung_max_pct=float(np.max(nxt)) if nxt else None,
               extrap_8x_pct=_median(far), extrap_8x_n=len(far),
               crossing_factor=_median(cross_err), crossing_n=len(cross_err),
               coverage=float(np.mean(cov)) if cov else None,
               width_pct=_median([r["width_pct"] for r in fitted]),
               unpredictable=sum(r["unpredictable"] for r in fitted),
               no_fit=sum("error" in r for r in rows))
    met = {}
    for k, goal in GOALS.items():
        v = out[k]
        met[k] = None if v is None else (goal[0] <= v <= goal[1] if k == "coverage" else v <= goal)
    out["met"] = met
    out["why"] = diagnose(rows) if any(v is False for v in met.values()) else []
    return out


def diagnose(rows: list[dict]) -> list[str]:
    """Why goals are missed, read off the rows: flags, floor drift, sign of the errors, the fit's
    own scatter against the errors, interval misses."""
    fitted = [r for r in rows if "loss_err_pct" in r]
    ok = [r for r in fitted if not r["unpredictable"]]
    out = []
    if len(ok) < len(fitted):
        out.append(f"{len(fitted) - len(ok)} of {len(fitted)} forecasts flagged a phase change (counted as misses)")
    if not ok:
        return out
    err = np.array([r["loss_err_pct"] for r in ok])
    es = sorted({round(r["E"], 3) for r in ok})
    if len(es) > 1 and es[-1] - es[0] > 0.1 * max(es[-1], 1e-9):
        out.append(f"the floor E is not pinned by these rungs: it ranges {es[0]:.3g} to {es[-1]:.3g} "
                   "across the fitted prefixes")
    if len(err) > 2 and (np.all(err > 0) or np.all(err < 0)):
        out.append(f"every prediction is too {'high' if err[0] > 0 else 'low'}: a systematic bias of "
                   "the law on this ladder")
    resid = 100 * float(np.median([r["resid"] for r in ok]))
    if resid > 0 and np.median(np.abs(err)) > 3 * resid:
        out.append(f"the fits' own scatter is {resid:.2g}% of the loss: the held-out errors are "
                   f"{np.median(np.abs(err)) / resid:.0f}x larger, so the miss is extrapolation, not noise")
    few = [r for r in ok if len(r["from_rungs"]) <= 2]
    if few and len(few) >= 0.3 * len(ok):
        out.append(f"{len(few)} of {len(ok)} predictions come from two rungs: two model sizes cannot "
                   "separate the floor from the size term (their intervals come from the top rung's own "
                   "curve, or a prior when each rung has one eval)")
    return out


def format_rows(rows: list[dict], metric: str) -> str:
    """Markdown table of backtest rows."""
    lines = [f"| held out | fitted on | x compute | loss pred [80%] | actual | err % | covered "
             f"| {metric} pred | actual | crossing factor |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        name = r["rung"] + (f" (recipe {r['recipe']})" if r.get("recipe") else "")
        if "loss_err_pct" not in r:
            lines.append(f"| {name} | {', '.join(r['from_rungs'])} | {r['factor']:.2g} | {r['error']} | | | | | | |")
            continue
        cf = r.get("crossing_factor")
        cf = "-" if cf is None else ("never" if not math.isfinite(cf) else f"{cf:.2g}")
        pm = "-" if r["pred_metric"] is None else f"{r['pred_metric']:.4g}"
        if r["unpredictable"]:
            pm += " (unpredictable: a miss)"
        am = r["actual_metric"]
        lines.append(f"| {name} | {', '.join(r['from_rungs'])} | {r['factor']:.2g} | "
                     f"{r['pred_loss']:.4g} [{r['interval'][0]:.4g}, {r['interval'][1]:.4g}] | "
                     f"{r['actual_loss']:.4g} | {r['loss_err_pct']:+.2f} | {'yes' if r['covered'] else 'no'} | "
                     f"{pm} | {am:.4g} | {cf} |")
    return "\n".join(lines)


NAMES = dict(next_rung_pct=("next-rung loss error (median |%|)", "<= 3%"),
             extrap_8x_pct=(">= 8x extrapolation loss error (median |%|)", "<= 8%"),
             crossing_factor=("crossing compute factor (median, max(f, 1/f))", "<= x2"),
             coverage=("80% interval coverage of held-out losses", "70-90%"))


def format_summary(s: dict) -> str:
    """One line per goal: measured value (and how many predictions), goal, met or not."""
    lines = []
    for k, (name, goal) in NAMES.items():
        v = s[k]
        if v is None:
            lines.append(f"- {name}: not measured (no such prediction here); goal {goal}")
            continue
        if k == "coverage":
            shown = f"{100 * v:.0f}% of {s['predictions']} (median width {s['width_pct']:.3g}% of the loss)"
        elif k == "crossing_factor":
            shown = (f"x{v:.3g}" if math.isfinite(v) else "never") + f" over {s['crossing_n']}"
        else:
            shown = (f"{v:.2f}%" if math.isfinite(v) else "inf (flagged)") + f" over {s[k.replace('pct', 'n')]}"
        lines.append(f"- {name}: {shown}; goal {goal}: {'met' if s['met'][k] else 'NOT met'}")
    for why in s.get("why", []):
        lines.append(f"- why: {why}")
    return "\n".join(lines)
