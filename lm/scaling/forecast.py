"""From a series of run records to a forecast: where will the criterion be met, and how sure?

1. Points: the evals past burn-in of every capable rung, at their learning-rate areas
   (lm.scaling.runs, lm.scaling.annealing; records without N and D as L(C)).
2. Step 1: L(N, S1, S2) (lm.scaling.law; L(N, D) for a constant LR), with and without a free
   floor.
3. Step 2: the link from the surrogate to the metric (lm.scaling.link), on all eval pairs.
4. Uncertainty: an ensemble of (law, link) pairs, the law refitted on rungs and eval points
   resampled (half with a free floor, half without), the link on resampled (surrogate, metric)
   pairs; every predicted loss also gets a log-normal scatter of the fit's residual, the seed
   spread (records run with --seeds) and the law's miss on what it was not fitted on, grown with
   the extrapolation (`_holdout_miss`: the top compute level, or with two rungs the second half
   of the top rung's own eval curve; a prior when neither exists), and every
   predicted metric the link's own scatter and the seeds' metric spread.
5. Crossing: the ladder direction is the line through the rungs' final (log N, log D); along it
   compute grows as C_top * s. The crossing is the cheapest s at which the law, mapped through
   the link, meets the criterion: the median over the ensemble (the main fit's when the points
   determine the law exactly); its interval comes from the ensemble; "never within 100x" is
   the share of members that do not cross below 100 x the largest rung's compute.
6. Attainable: the best metric within `budget_factor` x the largest rung's compute along the
   ladder and the favourable end of its 90% interval (`bound`): a verdict of failed needs the
   bound to miss the criterion.
7. Phase changes (lm.scaling.phase) make the forecast "unpredictable": the bound is then the
   metric's best value, unless the target is impossible (the link needs a loss <= 0, or the
   threshold is outside the metric's range): a flag never overrides an impossible target.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from lm.scaling import law as law_mod
from lm.scaling import link as link_mod
from lm.scaling import phase
from lm.scaling.fitting import one_blas_thread
from lm.scaling.runs import BURN_IN, Run, metric_keys, run_of  # noqa: F401  (the archive's names)

NEVER_FACTOR = 100    # "never within 100x" the largest rung's compute
BUDGET_FACTOR = 1000  # attainable: within this factor of the largest rung's compute
CONFIDENCE = 0.9      # attainable: the interval whose favourable end is the bound
# When the law's own miss cannot be measured (two rungs of one eval each): a prior log-error per
# decade of extrapolation in N x D. Learned from the external runs (lm.scaling.external): the
# RMS per decade of the two-level forecasts' log errors there is 0.024 (their median 0.005).
PRIOR_SD_PER_DECADE = 0.02
# A law without a floor joins the ensemble (the optimistic reading) unless it fits clearly worse:
# log residual above twice the floored fit's plus this slack.
PLAIN_SLACK = 0.005


@dataclasses.dataclass
class Series:
    metric: str
    crit: dict
    runs: list
    excluded: dict
    per_n: bool
    lower: bool
    threshold: float
    chance: float


def _series(records: list[dict]) -> Series | None:
    crit = (records[-1] if records else {}).get("criterion") or {}
    metric = crit.get("metric", "loss")
    runs_all = [r for r in (run_of(x) for x in records) if r is not None]
    runs = [r for r in runs_all if not r.excluded and math.isfinite(r.compute) and r.usable.any()]
    if len(runs) < 2 or len({(r.n, r.d_final) for r in runs}) < 2:
        return None
    chance = 0.0
    if metric == "accuracy":
        v = records[-1].get("vocab_size")
        chance = 1.0 / v if v else 0.0
    return Series(metric=metric, crit=crit, runs=runs, excluded={r.name: r.excluded for r in runs_all if r.excluded},
                  per_n=len({r.n for r in runs}) < 2, lower=crit.get("comparator", "<=") in ("<=", "<"),
                  threshold=float(crit.get("threshold", 0.0)), chance=chance)


def _fit_points(runs, rng=None):
    """Concatenated usable points (bootstrap: runs and points within runs resampled): N, the
    forward area S1 (tokens; D for a constant LR), the loss, the annealing area S2."""
    chosen = runs if rng is None else [runs[i] for i in rng.integers(0, len(runs), len(runs))]
    n, d, y, s2 = [], [], [], []
    for r in chosen:
        idx = np.flatnonzero(r.in_fit)
        if rng is not None and idx.size:
            idx = rng.choice(idx, idx.size)
        n += [r.n] * idx.size
        d += list(r.s1[idx])
        y += list(r.loss[idx])
        s2 += list(r.s2[idx])
    return np.array(n), np.array(d), np.array(y), np.array(s2)


def _fit_both(n, d, y, s2, per_n, starts=(None, None)):
    """(free-floor law or None, no-floor law or None)."""
    out = []
    for floor, start in zip((True, False), starts):
        try:
            out.append(law_mod.fit_law(n, d, y, floor=floor, per_n=per_n, start=start, s2=s2))
        except ValueError:
            out.append(None)
    return tuple(out)


def _pairs(runs):
    return np.concatenate([r.loss for r in runs]), np.concatenate([r.metric for r in runs])


def _fit_link(s: Series, loss, metric, start=None):
    return link_mod.fit_link(loss, metric, loss_like=link_mod.is_loss_like(s.metric), chance=s.chance,
                             start=start)


@dataclasses.dataclass(frozen=True)
class Direction:
    """The ladder line: N = n_top s^u, D = d_top s^(1-u), compute = c_top s; its runs have the
    top run's schedule: forward area S1 = s1_ratio D, annealing area s2 (lm.scaling.annealing)."""

    n_top: float
    d_top: float
    c_top: float
    u: float
    s1_ratio: float = 1.0
    s2: float = 0.0

    def loss(self, law, n, d):
        """The law at runs of the ladder's schedule with N = n, D = d tokens."""
        return law(n, np.asarray(d, dtype=np.float64) * self.s1_ratio, self.s2)

    def at(self, s):
        s = np.asarray(s, dtype=np.float64)
        return self.n_top * s ** self.u, self.d_top * s ** (1.0 - self.u), self.c_top * s


def direction(runs: list[Run]) -> Direction:
    """The line through the best run (lowest final loss) of each compute level (a factor 2;
    one rung per level on a ladder, the compute-optimal frontier on a sweep of N and D)."""
    top = max(runs, key=lambda r: r.compute)
    best = {}
    for r in runs:
        lvl = int(math.floor(math.log2(top.compute / r.compute)))
        if lvl not in best or r.final_loss < best[lvl].final_loss:
            best[lvl] = r
    front = list(best.values())
    ln = np.log([r.n for r in front])
    ld = np.log([r.d_final for r in front])
    u = 0.0
    if np.ptp(ln) > 1e-9:
        g = float(np.polyfit(ln, ld, 1)[0]) if np.ptp(ld) > 1e-9 else 0.0  # D ~ N^g
        u = 1.0 / (1.0 + g) if g > -0.9 else 1.0
    head = best[min(best)]
    return Direction(head.n, head.d_final, head.compute, float(min(max(u, 0.0), 1.0)),
                     head.s1_final / head.d_final, head.s2_final)


S_GRID = np.geomspace(1e-3, NEVER_FACTOR * 100, 600)


def crossing_s(law: law_mod.Law, dirn: Direction, target: float | None) -> float | None:
    """Smallest ladder factor s where the law reaches the target loss (None: not in the grid)."""
    if target is None or law is None:
        return None
    n, d, _ = dirn.at(S_GRID)
    hit = np.flatnonzero(dirn.loss(law, n, d) <= target)
    return float(S_GRID[hit[0]]) if hit.size else None


def _ensemble(s: Series, mains, link, samples: int, rng) -> list[tuple]:
    """(law, link) pairs: the law refitted on resampled rungs and points (floor / no floor
    alternate), the link on resampled (surrogate, metric) pairs."""
    main_floor, main_plain = mains
    if main_floor is not None and main_plain is not None and main_plain.resid > 2 * main_floor.resid + PLAIN_SLACK:
        main_plain = None  # the data reject a zero floor: no optimistic members
    pl, pm = _pairs(s.runs)
    ok = np.flatnonzero(np.isfinite(pl) & np.isfinite(pm))
    refit_link = link is not None and link.p != (0.0, 1.0) and ok.size >= 3
    out = []
    for i in range(samples):
        floor = (i % 2 == 0 or main_plain is None) and main_floor is not None
        for _ in range(5):  # a resample must keep what the law needs (two N, or two D)
            bn, bd, by, bs2 = _fit_points(s.runs, rng)
            if (s.per_n or np.unique(bn).size >= 2) and np.unique(bd).size >= 2:
                break
        try:
            b = law_mod.fit_law(bn, bd, by, floor=floor, per_n=s.per_n, start=main_floor if floor else main_plain,
                                s2=bs2)
        except ValueError:
            continue
        bl = link
        if refit_link:
            j = rng.choice(ok, ok.size)
            bl = _fit_link(s, pl[j], pm[j], start=link) or link
        out.append((b, bl))
    return out


def _holdout_miss(runs: list[Run], per_n: bool, starts=(None, None)) -> dict | None:
    """How far the law misses what it was not fitted on: RMS log error e1 at extrapolation f1.
    The bootstrap alone only sees parameter noise, not a law that bends differently beyond the
    data. With two compute levels below the top one, the top level is held out
    (`_level_miss`); with fewer, the second half of the largest rung's own eval curve
    (`_curve_miss`: how the law extrapolates in D); None when neither can be measured."""
    return _level_miss(runs, per_n, starts) or _curve_miss(runs, per_n, starts)


def _miss(law, held: list[Run], f1: float, name: str) -> dict | None:
    if law is None or f1 < 1.2:
        return None
    e = np.array([math.log(law(r.n, r.s1_final, r.s2_final) / r.final_loss) for r in held])
    return dict(rung=name, log_error=float(np.sqrt(np.mean(e * e))), factor=float(f1))


def _level_miss(runs: list[Run], per_n: bool, starts) -> dict | None:
    """The top compute level (the runs within 2x of the largest) held out: f1 is the geometric
    mean N x D of the held-out runs over the largest of the others."""
    c_top = max(r.compute for r in runs)
    held = [r for r in runs if r.compute > c_top / 2.0]
    inner = [r for r in runs if r.compute <= c_top / 2.0]
    if len({round(math.log2(c_top / r.compute)) for r in inner}) < 2:
        return None
    if not per_n and len({r.n for r in inner}) < 2:
        return None
    fl, plain = _fit_both(*_fit_points(inner), per_n, starts)  # from the full fit: near, and cheap
    f1 = math.exp(np.mean([math.log(r.n * r.d_final) for r in held])) / max(r.n * r.d_final for r in inner)
    return _miss(fl or plain, held, f1, max(held, key=lambda r: r.compute).name)


def _curve_miss(runs: list[Run], per_n: bool, starts) -> dict | None:
    """The largest rung's evals past half its tokens held out (it keeps at least two evals in the
    fit before): the law's miss at its final eval, f1 = its final tokens over the last kept eval's."""
    top = max(runs, key=lambda r: r.compute)
    keep = top.in_fit & (top.d <= top.d_final / 2.0)
    if keep.sum() < 2:
        return None
    inner = [r for r in runs if r is not top] + [dataclasses.replace(top, in_fit=keep)]
    try:
        fl, plain = _fit_both(*_fit_points(inner), per_n, starts)
    except ValueError:
        return None
    return _miss(fl or plain, [top], top.d_final / float(top.d[keep].max()), f"{top.name} (second half)")


def log_sd(runs, main, miss, nd: float) -> float:
    """The log-normal scatter of a predicted loss at N x D = nd beyond the fitted points: the
    fit's residual, the seed spread and the law's miss, grown with the extrapolation (the
    held-out miss e1 at f1 scales as log f / log f1; without one, a prior per decade)."""
    f = max(nd / max(r.n * r.d_final for r in runs), 1.0)
    seed = max((r.seed_sd / r.final_loss for r in runs if r.final_loss > 0), default=0.0)
    if miss is not None:
        # the held-out RMS error holds the eval scatter (the residual, counted above) too
        e1 = math.sqrt(max(miss["log_error"] ** 2 - main.resid ** 2, 0.0))
        ext = e1 * max(1.0, math.log(f) / math.log(miss["factor"]))
    else:
        ext = PRIOR_SD_PER_DECADE * max(math.log10(f), 1.0)
    return math.sqrt(max(main.resid, 1e-4) ** 2 + seed ** 2 + ext ** 2)


def _draws(ens, main, link, n, d, sd, metric_sd, rng, s2=0.0):
    """(loss draws, metric draws or None) of the ensemble at (n, d = S1, s2), with the scatters."""
    loss = np.array([b(n, d, s2) for b, _ in ens] or [main(n, d, s2)], dtype=np.float64)
    loss = loss * np.exp(rng.normal(0.0, sd, loss.size))
    if link is None:
        return loss, None
    links = [bl for _, bl in ens] or [link]
    met = np.array([bl(v) for bl, v in zip(links, loss)]) + rng.normal(0.0, metric_sd, loss.size)
    return loss, met


def _metric_sd(s: Series, link) -> float:
    seeds = max((r.seed_metric_sd for r in s.runs), default=0.0)
    if link is None or link_mod.is_loss_like(s.metric):
        return seeds
    return math.hypot(seeds, phase.link_scatter(link, *_pairs(s.runs)))


def _impossible(s: Series, link, l_star) -> str | None:
    """Why no scale can meet the criterion, whatever the trend or a phase change says."""
    if not link_mod.is_loss_like(s.metric):
        lo_ok, hi_ok = s.chance, 1.0
        if (not s.lower and s.threshold > hi_ok) or (s.lower and s.threshold < lo_ok):
            return f"the threshold {s.threshold:g} is outside the metric's range [{lo_ok:g}, {hi_ok:g}]"
    if l_star is not None and l_star <= 0:
        return f"the link needs a surrogate of {l_star:.3g}, and a loss cannot go below 0"
    return None


def attainable(s: Series, ens, main, link, dirn, miss, flagged, l_star, budget_factor, rng) -> dict:
    """The best criterion metric within budget_factor x the largest rung's compute along the
    ladder, and the favourable end of its 90% interval (the bound a verdict of failed needs to
    miss)."""
    n, d, c = (float(v) for v in dirn.at(budget_factor))
    sd = log_sd(s.runs, main, miss, n * d)
    loss, met = _draws(ens, main, link, n, d * dirn.s1_ratio, sd, _metric_sd(s, link), rng, dirn.s2)
    vals = met if met is not None else loss
    at = float(dirn.loss(main, n, d))
    best = float(link(at)) if link is not None else at
    q = 100 * (1 - CONFIDENCE) / 2
    bound = float(np.percentile(vals, q if s.lower else 100 - q))
    impossible = _impossible(s, link, l_star)
    if impossible:  # whatever the draws or a flag say, this bound cannot pass
        bound = max(bound, s.threshold + 1e-9) if s.lower else min(bound, s.threshold - 1e-9)
    elif flagged:  # a phase change: no scale can be excluded
        bound = 0.0 if s.lower else 1.0
    ok = bound <= s.threshold if s.lower else bound >= s.threshold
    return dict(budget_compute=c, best=best, bound=bound, confidence=CONFIDENCE, passes=bool(ok),
                impossible=impossible, budget_factor=float(budget_factor), n=n, d=d)


def member_crossings(ens, dirn: Direction, target_of) -> list[float]:
    """Each ensemble member's crossing factor s (inf: never in the grid); target_of(link) is the
    loss the member's link needs."""
    out = []
    for b, bl in ens:
        x = crossing_s(b, dirn, target_of(bl))
        out.append(math.inf if x is None else x)
    return out


def _crossing(out, s: Series, ens, main, link, dirn, l_star):
    s_main = crossing_s(main, dirn, l_star)
    b_s = member_crossings(ens, dirn, lambda bl: bl.target(s.threshold, s.lower) if bl is not None else l_star)
    n_par = (0 if s.per_n else 2) + 2 + (1 if main.floor else 0) + (1 if main.C else 0)
    exact = out["points"] <= n_par  # as many parameters as points: resampling cannot move the fit
    out["exactly_determined"] = bool(exact)
    if b_s and not exact:
        arr = np.array(b_s)
        out["p_cross"] = float(np.mean(np.isfinite(arr)))
        out["p_never_100x"] = float(np.mean(arr > NEVER_FACTOR))
        lo, hi = np.percentile(np.minimum(arr, 1e300), [10, 90])  # inf (never) stays last
        lo, hi = (math.inf if v >= 1e290 else float(v) for v in (lo, hi))  # never: beyond the grid
        out["interval"] = [float(lo * dirn.c_top), float(hi * dirn.c_top)]  # inf: never
        # the point estimate is the ensemble's median crossing, not the main fit's: on a short
        # ladder one rung above the trend pulls the floored fit's floor up and its crossing far
        # out ("never"), while half the members read the same rungs without a floor
        med = float(np.median(arr))
        s_main = med if math.isfinite(med) else None
    if s_main is not None:
        nn, dd, cc = dirn.at(s_main)
        out.update(compute_at_threshold=float(cc), at_threshold=dict(n=float(nn), d=float(dd)))
    return s_main


def _ladder_curve(runs, dirn, ens, main, s_main):
    """The law along the ladder line, with its 80% band, for plots."""
    s_hi = max(NEVER_FACTOR, 2.0 * (s_main or 0.0))
    grid = np.geomspace(min(r.compute for r in runs) / dirn.c_top / 2.0, s_hi, 40)
    gn, gd, gc = dirn.at(grid)
    curves = np.array([dirn.loss(b, gn, gd) for b, _ in ens] or [dirn.loss(main, gn, gd)])
    band = np.percentile(curves, [10, 90], axis=0)
    return dict(compute=gc.tolist(), n=gn.tolist(), d=gd.tolist(), loss=dirn.loss(main, gn, gd).tolist(),
                lo=band[0].tolist(), hi=band[1].tolist())


def predict_at(s: Series, ens, main, link, miss, l_star, flagged, target: dict, rng, dirn: Direction) -> dict:
    """The final surrogate and metric of a run at target {n, d, compute}, with 80% intervals.
    Optional target s1, s2: its final learning-rate areas (lm.scaling.annealing.final_areas);
    without them the run has the ladder's schedule (direction: the top run's S1 / D and S2)."""
    tn, td = float(target["n"]), float(target["d"])
    ts1, ts2 = float(target.get("s1") or td * dirn.s1_ratio), float(target.get("s2", dirn.s2) or 0.0)
    if all(r.schedule == "compute-only" for r in s.runs) and target.get("compute"):
        tn, td = 1.0, float(target["compute"])  # an L(C) fit: N = 1, D = compute
        ts1, ts2 = td, 0.0
    sd = log_sd(s.runs, main, miss, tn * td)
    loss, met = _draws(ens, main, link, tn, ts1, sd, _metric_sd(s, link), rng, ts2)
    s_at = float(main(tn, ts1, ts2))
    m_at = float(link(s_at)) if link else None
    passes = l_star is not None and s_at <= l_star and not flagged
    return dict(n=tn, d=td, compute=target.get("compute"), surrogate=s_at,
                surrogate_interval=[float(v) for v in np.percentile(loss, [10, 90])], metric=m_at,
                metric_interval=[float(v) for v in np.percentile(met, [10, 90])] if met is not None else None,
                log_sd=sd, passes=bool(passes))


def _in_compute(r: Run) -> Run:
    """A run's final point as L(C) sees it (N = 1, D = its compute)."""
    one = np.ones(1)
    return dataclasses.replace(r, n=1.0, d=r.compute * one, loss=r.final_loss * one, metric=r.final_metric * one,
                               step=one, usable=one > 0, schedule="compute-only", s1=None, s2=None, in_fit=None)


def forecast(records: list[dict], *, target: dict | None = None, samples: int = 100, seed: int = 0,
             budget_factor: float = BUDGET_FACTOR) -> dict | None:
    """The forecast for a series (records of one experiment/criterion/variant); None when fewer
    than two capable rungs or no law can be fitted. `target` {n, d, compute}: also predict the
    final loss and metric of a run at that scale ("at")."""
    with one_blas_thread():
        s = _series(records)
        return None if s is None else _forecast(s, target, samples, seed, budget_factor)


def _forecast(s: Series, target, samples, seed, budget_factor, targets=()) -> dict | None:
    """The forecast of a series; `targets` (backtests): "at_each", one prediction per target."""
    n, d, y, s2 = _fit_points(s.runs)
    mains = _fit_both(n, d, y, s2, s.per_n)
    main = mains[0] or mains[1]
    if main is None and not s.per_n:  # too few points for L(N, D): the final points in compute
        s = dataclasses.replace(s, per_n=True, runs=[_in_compute(r) for r in s.runs])
        n, d, y, s2 = _fit_points(s.runs)
        mains = _fit_both(n, d, y, s2, True)
        main = mains[0] or mains[1]
    if main is None:
        return None
    link = _fit_link(s, *_pairs(s.runs))
    l_star = link.target(s.threshold, s.lower) if link else None
    dirn = direction(s.runs)
    rng = np.random.default_rng(seed)
    ens = _ensemble(s, mains, link, samples, rng)
    jumps = phase.phase_changes(s.runs, link)
    out = dict(
        kind="L(C)" if all(r.schedule == "compute-only" for r in s.runs) else (
            "L(D) per N" if s.per_n else "L(N,D)"),
        law=dataclasses.asdict(main), law_text=main.describe(),
        law_nofloor=dataclasses.asdict(mains[1]) if mains[1] else None,
        link=dataclasses.asdict(link) if link else None, link_text=link.describe() if link else None,
        surrogate=metric_keys(s.metric)[1], target_surrogate=l_star, direction=dataclasses.asdict(dirn),
        rungs=[r.name for r in s.runs], excluded=s.excluded, points=int(y.size), samples=len(ens),
        compute_at_threshold=None, interval=None, p_cross=0.0, p_never_100x=1.0,
        unpredictable=bool(jumps), phase_changes=jumps)
    s_main = _crossing(out, s, ens, main, link, dirn, l_star)
    out["ladder_curve"] = _ladder_curve(s.runs, dirn, ens, main, s_main)
    miss = _holdout_miss(s.runs, s.per_n, mains)
    if miss is not None:
        out["holdout_miss"] = miss
    out["attainable"] = attainable(s, ens, main, link, dirn, miss, bool(jumps), l_star, budget_factor, rng)
    out["no_trend"] = s_main is None and not (jumps and not out["attainable"]["impossible"])
    out["reason"] = _reason(out, s.metric, l_star, link)
    if target is not None:
        out["at"] = predict_at(s, ens, main, link, miss, l_star, bool(jumps), target, rng, dirn)
    if targets:
        out["at_each"] = [predict_at(s, ens, main, link, miss, l_star, bool(jumps), t, rng, dirn) for t in targets]
    return out


def _reason(out, metric, l_star, link) -> str:
    att = out["attainable"]
    if att["impossible"]:
        return f"no trend: {att['impossible']}"
    if out["unpredictable"]:
        j = out["phase_changes"][0]
        return (f"unpredictable (phase change): {metric} jumped {j['metric'][0]:.3g} -> "
                f"{j['metric'][1]:.3g} between steps {j['steps'][0]} and {j['steps'][1]} of "
                f"{j['rung']} while the surrogate's change ({j['surrogate'][0]:.3g} -> "
                f"{j['surrogate'][1]:.3g}) predicted {j['predicted_metric_change']:+.3g} "
                f"(eval noise {j['noise']:.2g})")
    if link is None:
        return "no trend: the metric cannot be linked to the surrogate"
    if l_star is None:
        return f"no trend: the fitted link ({out['link_text']}) never meets the threshold"
    if out["compute_at_threshold"] is None:
        return (f"no trend: {out['law_text']} stays above the loss {l_star:.4g} the criterion "
                f"needs within {S_GRID[-1]:.0f}x the largest rung")
    text = (f"{out['kind']} crosses at about {out['compute_at_threshold']:.3g} FLOPs "
            f"({out['compute_at_threshold'] / out['direction']['c_top']:.2g}x the largest rung)")
    if out.get("exactly_determined"):
        return (text + f"; exactly determined by {out['points']} points: no interval (more rungs or "
                "a constant-LR schedule with intermediate evals would give one)")
    iv = out["interval"]
    if iv:
        hi = f"{iv[1]:.3g}" if math.isfinite(iv[1]) else "never"
        text += f", 80% interval {iv[0]:.3g} to {hi}"
    return text + f", P(never within {NEVER_FACTOR}x) = {out['p_never_100x']:.2f}"


def rungs_ahead(f: dict, candidates: list[dict]) -> tuple[list[dict], str | None]:
    """The forecast at the ladder's rungs still to run ({rung, n, d}, cheapest first): their
    predicted surrogate and whether the criterion is predicted to hold; and the cheapest rung
    that holds (None: none of them, or the forecast is unpredictable)."""
    if not f or "law" not in f:
        return [], None
    law = law_mod.Law(**f["law"])
    dirn = Direction(**f["direction"])
    l_star = f.get("target_surrogate")
    out, first = [], None
    for c in candidates:
        loss = float(dirn.loss(law, c["n"], c["d"]))
        holds = l_star is not None and loss <= l_star and not f.get("unpredictable")
        out.append(dict(rung=c["rung"], n=c["n"], d=c["d"], surrogate=loss, passes=bool(holds)))
        if holds and first is None:
            first = c["rung"]
    return out, first
