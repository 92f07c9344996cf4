"""From a series of run records to a forecast: where will the criterion be met, and how sure?

1. Points. Every run contributes its eval curve (history `eval_*`), D at an eval = tokens x
   step / steps. Schedule rule (the simplest that works): a constant-LR run gives every eval
   past the first 15% of its steps (and past warmup); a decaying schedule (cosine, linear)
   bends the curve towards its own end, so only its final evaluation is used.
   Rungs that structurally cannot meet the criterion (records.incapable) are left out.
2. Step 1: L(N, D) (lm.scaling.law), with and without a free floor.
3. Step 2: the link from the surrogate to the metric (lm.scaling.link), on all eval pairs.
4. Interval of a predicted loss: bootstrap refits, the eval scatter of the fit, and the
   law's miss on the largest rung when fitted without it (`_holdout_miss`).
5. Crossing: the ladder direction is the line through the rungs' final (log N, log D); along
   it compute grows as C_top * s. The crossing is the cheapest s at which the law, mapped
   through the link, meets the criterion. The interval is a bootstrap over rungs and over eval
   points within rungs, half the refits with a free floor and half without; "never within
   100x" is the share of refits that do not cross below 100 x the largest rung's compute.
6. Phase change: a jump of an accuracy-like metric between consecutive evals of one run (at
   least a quarter of its range across the series) that the law + link (the link fitted on the
   other rungs) predict less than half of means the metric is not a smooth function of the
   trend: "unpredictable", no number.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from lm.scaling import law as law_mod
from lm.scaling import link as link_mod
from lm.scaling import records as rec_mod

BURN_IN = 0.15      # share of each run's steps whose evals are left out of the law fit
NEVER_FACTOR = 100  # "never within 100x" the largest rung's compute
JUMP = 0.25         # a within-run jump: this share of the metric's range across the series


def metric_keys(metric: str) -> tuple[str, str]:
    """(history key of the criterion's metric, history key of its continuous surrogate)."""
    if metric.startswith("task:"):
        task = metric[len("task:"):].split("/", 1)[0]
        return "eval_task/" + metric[len("task:"):], f"eval_task/{task}/answer_nll"
    return "eval_" + metric, "eval_loss"


@dataclasses.dataclass
class Run:
    """One rung's eval curve."""

    name: str
    n: float
    d: np.ndarray       # tokens at each eval
    loss: np.ndarray    # surrogate at each eval
    metric: np.ndarray  # criterion metric at each eval (NaN where missing)
    step: np.ndarray
    usable: np.ndarray  # bool: point enters the law fit
    compute: float      # training FLOPs of the whole run
    final_loss: float
    final_metric: float
    schedule: str
    excluded: str | None = None  # why the rung is left out of the fits

    @property
    def d_final(self) -> float:
        return float(self.d[-1])


def _f(x):
    try:
        x = float(x)
    except (TypeError, ValueError):
        return math.nan
    return x


def run_of(rec: dict) -> Run | None:
    """A Run from a record, or None when it lacks N, D or an eval curve."""
    crit = rec.get("criterion") or {}
    metric = crit.get("metric", "loss")
    m_key, s_key = metric_keys(metric)
    n, tokens, sched = rec_mod.n_params(rec), rec_mod.tokens(rec), rec_mod.schedule(rec)
    steps = sched.get("steps") or rec.get("steps")
    if not (n and tokens and steps):
        return None
    # excess bits per byte is bits per byte minus the source's entropy rate (final only)
    shift = 0.0
    if metric == "excess_bits_per_byte":
        m_key, shift = "eval_bits_per_byte", _f((rec.get("final") or {}).get("entropy_rate"))
    pts = {}
    for h in rec.get("history") or []:
        if s_key in h and _f(h.get("step")) > 0 and math.isfinite(_f(h[s_key])):
            pts[int(h["step"])] = (_f(h[s_key]), _f(h.get(m_key)) - shift)
    fl, fm = _f(rec.get("surrogate_value")), _f(rec.get("metric_value"))
    if s_key != "eval_loss":
        fl = _f((rec.get("final") or {}).get(s_key[len("eval_"):]))
    if math.isfinite(fl):
        pts[int(steps)] = (fl, fm)  # the final evaluation is the run's result
    if not pts:
        return None
    step = np.array(sorted(pts), dtype=np.float64)
    loss = np.array([pts[int(s)][0] for s in step])
    met = np.array([pts[int(s)][1] for s in step])
    if sched.get("name") == "constant":
        usable = (step >= BURN_IN * steps) & (step >= sched.get("warmup_steps", 0))
    else:
        usable = step >= steps
    usable &= np.isfinite(loss) & (loss > 0)
    return Run(name=str(rec.get("rung")), n=float(n), d=tokens * step / steps, loss=loss, metric=met,
               step=step, usable=usable, compute=_f(rec.get("train_flops")), final_loss=fl,
               final_metric=fm, schedule=str(sched.get("name")), excluded=rec_mod.incapable(rec))


def _fit_points(runs, rng=None):
    """Concatenated usable points (bootstrap: runs and points within runs resampled)."""
    chosen = runs if rng is None else [runs[i] for i in rng.integers(0, len(runs), len(runs))]
    n, d, y = [], [], []
    for r in chosen:
        idx = np.flatnonzero(r.usable)
        if rng is not None and idx.size:
            idx = rng.choice(idx, idx.size)
        n += [r.n] * idx.size
        d += list(r.d[idx])
        y += list(r.loss[idx])
    return np.array(n), np.array(d), np.array(y)


def _fit_both(n, d, y, per_n, starts=(None, None)):
    """(free-floor law or None, no-floor law or None)."""
    out = []
    for floor, start in zip((True, False), starts):
        try:
            out.append(law_mod.fit_law(n, d, y, floor=floor, per_n=per_n, start=start))
        except ValueError:
            out.append(None)
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class Direction:
    """The ladder line: N = n_top s^u, D = d_top s^(1-u), compute = c_top s."""

    n_top: float
    d_top: float
    c_top: float
    u: float

    def at(self, s):
        s = np.asarray(s, dtype=np.float64)
        return self.n_top * s ** self.u, self.d_top * s ** (1.0 - self.u), self.c_top * s


def direction(runs: list[Run]) -> Direction:
    top = max(runs, key=lambda r: r.compute)
    ln = np.log([r.n for r in runs])
    ld = np.log([r.d_final for r in runs])
    u = 0.0
    if np.ptp(ln) > 1e-9:
        g = float(np.polyfit(ln, ld, 1)[0]) if np.ptp(ld) > 1e-9 else 0.0  # D ~ N^g
        u = 1.0 / (1.0 + g) if g > -0.9 else 1.0
    return Direction(top.n, top.d_final, top.compute, float(min(max(u, 0.0), 1.0)))


S_GRID = np.geomspace(1e-3, NEVER_FACTOR * 100, 600)


def crossing_s(law: law_mod.Law, dirn: Direction, target: float | None) -> float | None:
    """Smallest ladder factor s where the law reaches the target loss (None: not in the grid)."""
    if target is None or law is None:
        return None
    n, d, _ = dirn.at(S_GRID)
    hit = np.flatnonzero(law(n, d) <= target)
    return float(S_GRID[hit[0]]) if hit.size else None


def phase_changes(runs: list[Run], law, link, *, min_gap: float = 0.5) -> list[dict]:
    """Within-run metric jumps that the law + link do not predict (accuracy-like metrics)."""
    if link is None or law is None or link.kind != "sigmoid":
        return []
    allm = np.concatenate([r.metric[np.isfinite(r.metric)] for r in runs] or [np.zeros(0)])
    if allm.size < 2:
        return []
    span = float(np.ptp(allm))
    out = []
    for r in runs:
        # the link from the other rungs: fitted on r's own points, a steep sigmoid would
        # "explain" r's jump after the fact
        others = [o for o in runs if o is not r]
        own = link
        if len(others) >= 2:
            own = link_mod.fit_link(np.concatenate([o.loss for o in others]),
                                    np.concatenate([o.metric for o in others]),
                                    loss_like=False, chance=link.p[0]) or link
        pred = own(law(np.full(r.d.shape, r.n), r.d))
        for i in range(1, r.step.size):
            jump = r.metric[i] - r.metric[i - 1]
            if not math.isfinite(jump) or abs(jump) < max(JUMP * span, 0.05):
                continue
            expected = pred[i] - pred[i - 1]
            if abs(expected) < min_gap * abs(jump) or np.sign(expected) != np.sign(jump):
                out.append(dict(rung=r.name, steps=[int(r.step[i - 1]), int(r.step[i])],
                                metric=[float(r.metric[i - 1]), float(r.metric[i])],
                                surrogate=[float(r.loss[i - 1]), float(r.loss[i])],
                                predicted_metric_change=float(expected)))
    return out


def forecast(records: list[dict], *, target: dict | None = None, samples: int = 100,
             seed: int = 0) -> dict | None:
    """The forecast for a series (records of one experiment/criterion/variant); None when fewer
    than two capable rungs or no law can be fitted. `target` {n, d, compute}: also predict the
    final loss and metric of a run at that scale ("at")."""
    crit = (records[-1] if records else {}).get("criterion") or {}
    metric = crit.get("metric", "loss")
    runs_all = [r for r in (run_of(x) for x in records) if r is not None]
    excluded = {r.name: r.excluded for r in runs_all if r.excluded}
    runs = [r for r in runs_all if not r.excluded and math.isfinite(r.compute) and r.usable.any()]
    if len(runs) < 2 or len({(r.n, r.d_final) for r in runs}) < 2:
        return None
    per_n = len({r.n for r in runs}) < 2
    n, d, y = _fit_points(runs)
    main_floor, main_plain = _fit_both(n, d, y, per_n)
    main = main_floor or main_plain
    if main is None:
        return None
    lower = crit.get("comparator", "<=") in ("<=", "<")
    threshold = float(crit.get("threshold", 0.0))
    loss_like = link_mod.is_loss_like(metric)
    pairs_l = np.concatenate([r.loss for r in runs])
    pairs_m = np.concatenate([r.metric for r in runs])
    chance = 0.0
    if metric == "accuracy":
        v = records[-1].get("vocab_size")
        chance = 1.0 / v if v else 0.0
    link = link_mod.fit_link(pairs_l, pairs_m, loss_like=loss_like, chance=chance)
    l_star = link.target(threshold, lower) if link else None
    dirn = direction(runs)

    # bootstrap: rungs and points within rungs; floor / no floor alternate
    rng = np.random.default_rng(seed)
    boots, b_s = [], []
    for i in range(samples):
        floor = i % 2 == 0 and main_floor is not None or main_plain is None
        start = main_floor if floor else main_plain
        for _ in range(5):  # a resample must keep what the law needs (two N, or two D)
            bn, bd, by = _fit_points(runs, rng)
            if (per_n or np.unique(bn).size >= 2) and np.unique(bd).size >= 2:
                break
        try:
            b = law_mod.fit_law(bn, bd, by, floor=floor, per_n=per_n, start=start)
        except ValueError:
            continue
        boots.append(b)
        s = crossing_s(b, dirn, l_star)
        b_s.append(math.inf if s is None else s)

    s_main = crossing_s(main, dirn, l_star)
    # the law along the ladder line, with its 80% band, for plots
    s_hi = max(NEVER_FACTOR, 2.0 * (s_main or 0.0))
    grid = np.geomspace(min(r.compute for r in runs) / dirn.c_top / 2.0, s_hi, 40)
    gn, gd, gc = dirn.at(grid)
    curves = np.array([b(gn, gd) for b in boots] or [main(gn, gd)])
    band = np.percentile(curves, [10, 90], axis=0)
    ladder_curve = dict(compute=gc.tolist(), n=gn.tolist(), d=gd.tolist(), loss=main(gn, gd).tolist(),
                        lo=band[0].tolist(), hi=band[1].tolist())
    jumps = phase_changes(runs, main, link)
    out = dict(
        kind="L(D) per N" if per_n else "L(N,D)", law=dataclasses.asdict(main),
        law_text=main.describe(), law_nofloor=dataclasses.asdict(main_plain) if main_plain else None,
        link=dataclasses.asdict(link) if link else None, link_text=link.describe() if link else None,
        surrogate=metric_keys(metric)[1], target_surrogate=l_star, direction=dataclasses.asdict(dirn),
        rungs=[r.name for r in runs], excluded=excluded, points=int(y.size), samples=len(boots),
        compute_at_threshold=None, interval=None, p_cross=0.0, p_never_100x=1.0,
        unpredictable=bool(jumps), phase_changes=jumps, ladder_curve=ladder_curve,
    )
    n_par = (0 if per_n else 2) + 2 + (1 if main.floor else 0)
    exact = y.size <= n_par  # as many parameters as points: resampling cannot move the fit
    out["exactly_determined"] = bool(exact)
    if b_s and not exact:
        arr = np.array(b_s)
        out["p_cross"] = float(np.mean(np.isfinite(arr)))
        out["p_never_100x"] = float(np.mean(arr > NEVER_FACTOR))
        lo, hi = np.percentile(np.minimum(arr, 1e300), [10, 90])  # inf (never) stays last
        lo, hi = (math.inf if v >= 1e300 else v for v in (lo, hi))
        out["interval"] = [float(lo * dirn.c_top), float(hi * dirn.c_top)]  # inf: never
    if s_main is not None:
        nn, dd, cc = dirn.at(s_main)
        out.update(compute_at_threshold=float(cc), at_threshold=dict(n=float(nn), d=float(dd)))
    out["no_trend"] = s_main is None and not jumps
    out["reason"] = _reason(out, metric, l_star, link, main)

    if target is not None:
        tn, td = float(target["n"]), float(target["d"])
        sig = max(main.resid, 1e-4)
        vals = np.array([b(tn, td) for b in boots] or [main(tn, td)])
        vals = vals * np.exp(rng.normal(0.0, sig, vals.size))  # the final eval's own scatter
        miss = _holdout_miss(runs, per_n, tn * td)
        if miss is not None:  # the law's own misspecification, seen on the top rung
            out["holdout_miss"] = miss
            vals = vals * np.exp(rng.normal(0.0, miss["sd"], vals.size))
        lo, hi = np.percentile(vals, [10, 90])
        s_at = float(main(tn, td))
        m_at = float(link(s_at)) if link else None
        m_band = [float(v) for v in np.percentile(link(vals), [10, 90])] if link else None
        passes = l_star is not None and s_at <= l_star and not jumps
        out["at"] = dict(n=tn, d=td, compute=target.get("compute"), surrogate=s_at,
                         surrogate_interval=[float(lo), float(hi)], metric=m_at,
                         metric_interval=m_band, passes=bool(passes))
    return out


def _holdout_miss(runs: list[Run], per_n: bool, target_nd: float) -> dict | None:
    """How far the law misses the largest rung when fitted without it (log error e1 at
    extrapolation f1); for a target f x beyond the largest rung the predictive interval gets an
    extra log-normal scatter of sd |e1| * max(1, log f / log f1). The bootstrap alone only sees
    parameter noise, not a law that bends differently beyond the data. Needs three rungs."""
    if len(runs) < 3:
        return None
    top = max(runs, key=lambda r: r.compute)
    inner = [r for r in runs if r is not top]
    if not per_n and len({r.n for r in inner}) < 2:
        return None
    n, d, y = _fit_points(inner)
    fl, plain = _fit_both(n, d, y, per_n)
    law = fl or plain
    if law is None:
        return None
    e1 = float(np.log(law(top.n, top.d_final) / top.final_loss))
    f1 = top.n * top.d_final / max(r.n * r.d_final for r in inner)
    f = target_nd / (top.n * top.d_final)
    scale = max(1.0, math.log(f) / math.log(f1)) if f1 > 1.0 + 1e-9 and f > 1.0 else 1.0
    return dict(rung=top.name, log_error=e1, factor=float(f1), sd=abs(e1) * scale)


def _reason(out, metric, l_star, link, main) -> str:
    if out["unpredictable"]:
        j = out["phase_changes"][0]
        return (f"unpredictable (phase change): {metric} jumped {j['metric'][0]:.3g} -> "
                f"{j['metric'][1]:.3g} between steps {j['steps'][0]} and {j['steps'][1]} of "
                f"{j['rung']} while the {out['kind']} trend + link predicted a change of "
                f"{j['predicted_metric_change']:+.3g}")
    if link is None:
        return "no trend: the metric cannot be linked to the surrogate"
    if l_star is None:
        return f"no trend: the fitted link ({out['link_text']}) never meets the threshold"
    if out["compute_at_threshold"] is None:
        return (f"no trend: {out['law_text']} stays above the loss {l_star:.4g} the criterion "
                f"needs within {S_GRID[-1]:.0f}x the largest rung")
    iv = out["interval"]
    if out.get("exactly_determined"):
        return (f"{out['kind']} crosses at about {out['compute_at_threshold']:.3g} FLOPs; exactly "
                f"determined by {out['points']} points: no interval (more rungs or a constant-LR "
                "schedule with intermediate evals would give one)")
    text = (f"{out['kind']} crosses at about {out['compute_at_threshold']:.3g} FLOPs "
            f"({out['compute_at_threshold'] / out['direction']['c_top']:.2g}x the largest rung)")
    if iv:
        hi = f"{iv[1]:.3g}" if math.isfinite(iv[1]) else "never"
        text += f", 80% interval {iv[0]:.3g} to {hi}"
    text += f", P(never within {NEVER_FACTOR}x) = {out['p_never_100x']:.2f}"
    return text


def rungs_ahead(f: dict, candidates: list[dict]) -> tuple[list[dict], str | None]:
    """The forecast at the ladder's rungs still to run ({rung, n, d}, cheapest first): their
    predicted surrogate and whether the criterion is predicted to hold; and the cheapest rung
    that holds (None: none of them, or the forecast is unpredictable)."""
    if not f or "law" not in f:
        return [], None
    law = law_mod.Law(**f["law"])
    l_star = f.get("target_surrogate")
    out, first = [], None
    for c in candidates:
        loss = float(law(c["n"], c["d"]))
        holds = l_star is not None and loss <= l_star and not f.get("unpredictable")
        out.append(dict(rung=c["rung"], n=c["n"], d=c["d"], surrogate=loss, passes=bool(holds)))
        if holds and first is None:
            first = c["rung"]
    return out, first
