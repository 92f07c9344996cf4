"""What a forecast reads from one run record: its eval curve as a Run, and a series' recipes.

Points. Every run contributes its eval curve (history `eval_*`), D at an eval = tokens x
step / steps; every eval past the first 15% of its steps and past warmup (the burn-in) enters
the law fit (`in_fit`), and a run's final eval always does. A decaying schedule (cosine,
linear, wsd) bends the curve towards its own end: its evals carry the learning-rate areas of
lm.scaling.annealing (s1, forward-area tokens, and s2, the annealing area; s1 = d and s2 = 0
for a constant LR), and the law is fitted on (N, S1, S2): L = E + A N^-a + B S1^-b - C S2
(Tissue et al. 2024). `usable` keeps the older, narrower set (a decaying schedule: its final
eval only) for the within-run phase checks (lm.scaling.phase): their link, fitted on the other
rungs, cannot judge a cosine run's early evals at losses the other rungs never reached.
Records without N or D (hand-made, foreign) give one point at D = their training compute and
N = 1: the per-N law L(D) is then the compute-only law L(C) = E + B C^-b.

Recipes. A series' rungs differ in scale only; a rung run again with another schedule, or a
second record at the same compute (a reproduction, a recipe variant), is not a rung at 1x
compute: `recipes` splits such points into their own series over the shared smaller rungs.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from lm.scaling import annealing
from lm.scaling import records as rec_mod

BURN_IN = 0.15       # share of each run's steps whose evals are left out of the law fit
SAME_COMPUTE = 1.1   # two records within this compute ratio are one rung run twice


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
    usable: np.ndarray  # bool: past burn-in (a decaying schedule: its final eval only); phase checks
    compute: float      # training FLOPs of the whole run
    final_loss: float
    final_metric: float
    schedule: str
    excluded: str | None = None  # why the rung is left out of the fits
    examples: float = 0.0        # eval examples behind the metric (0: unknown)
    seed_sd: float = 0.0         # std over seeds of the final surrogate (records run with --seeds)
    seed_metric_sd: float = 0.0  # ... of the final metric
    s1: np.ndarray | None = None  # forward-area tokens at each eval (None: d, a constant LR)
    s2: np.ndarray | None = None  # annealing area at each eval (None: zeros, a constant LR)
    in_fit: np.ndarray | None = None  # bool: point enters the law fit (None: usable)

    def __post_init__(self):
        if self.in_fit is None:
            self.in_fit = np.asarray(self.usable, dtype=bool)
        if self.s1 is None:
            self.s1 = np.asarray(self.d, dtype=np.float64)
        if self.s2 is None:
            self.s2 = np.zeros(np.shape(self.d))

    @property
    def d_final(self) -> float:
        return float(self.d[-1])

    @property
    def s1_final(self) -> float:
        return float(self.s1[-1])

    @property
    def s2_final(self) -> float:
        return float(self.s2[-1])


def _f(x):
    try:
        x = float(x)
    except (TypeError, ValueError):
        return math.nan
    return x


def _curve(rec: dict, m_key: str, s_key: str, shift: float, steps: int) -> dict:
    pts = {}
    for h in rec.get("history") or []:
        if s_key in h and _f(h.get("step")) > 0 and math.isfinite(_f(h[s_key])):
            pts[int(h["step"])] = (_f(h[s_key]), _f(h.get(m_key)) - shift)
    fl, fm = _f(rec.get("surrogate_value")), _f(rec.get("metric_value"))
    if s_key != "eval_loss":
        fl = _f((rec.get("final") or {}).get(s_key[len("eval_"):]))
    if math.isfinite(fl):
        pts[int(steps)] = (fl, fm)  # the final evaluation is the run's result
    return pts


def _seeds(rec: dict) -> tuple[float, float]:
    s = rec.get("seeds") or {}
    sd, msd = _f(s.get("surrogate_std")), _f(s.get("metric_std"))
    return (sd if math.isfinite(sd) else 0.0), (msd if math.isfinite(msd) else 0.0)


def _compute_only(rec: dict) -> Run | None:
    c, fl, fm = _f(rec.get("train_flops")), _f(rec.get("surrogate_value")), _f(rec.get("metric_value"))
    if not (math.isfinite(c) and c > 0 and math.isfinite(fl) and fl > 0):
        return None
    sd, msd = _seeds(rec)
    one = np.ones(1)
    return Run(name=str(rec.get("rung")), n=1.0, d=c * one, loss=fl * one, metric=fm * one, step=one,
               usable=one > 0, compute=c, final_loss=fl, final_metric=fm, schedule="compute-only",
               excluded=rec_mod.incapable(rec), seed_sd=sd, seed_metric_sd=msd)


def schedule_of_record(rec: dict, steps: int | None = None) -> dict:
    """The record's schedule for lm.scaling.annealing: name, warmup_steps, steps, min_lr_ratio
    and wsd's cooldown_fraction (from the stored config; lm.config's default 0.2)."""
    sched = dict(rec_mod.schedule(rec))
    train = (rec.get("config") or {}).get("train") or {}
    sched.setdefault("cooldown_fraction", float(train.get("cooldown_fraction") or annealing.COOLDOWN_FRACTION))
    if steps:
        sched["steps"] = int(steps)
    return sched


def run_of(rec: dict) -> Run | None:
    """A Run from a record, or None when it has no usable eval at all."""
    crit = rec.get("criterion") or {}
    metric = crit.get("metric", "loss")
    m_key, s_key = metric_keys(metric)
    n, tokens, sched = rec_mod.n_params(rec), rec_mod.tokens(rec), rec_mod.schedule(rec)
    steps = sched.get("steps") or rec.get("steps")
    if not (n and tokens and steps):
        return _compute_only(rec)
    # excess bits per byte is bits per byte minus the source's entropy rate (final only)
    shift = 0.0
    if metric == "excess_bits_per_byte":
        m_key, shift = "eval_bits_per_byte", _f((rec.get("final") or {}).get("entropy_rate"))
    pts = _curve(rec, m_key, s_key, shift, int(steps))
    if not pts:
        return None
    step = np.array(sorted(pts), dtype=np.float64)
    loss = np.array([pts[int(s)][0] for s in step])
    met = np.array([pts[int(s)][1] for s in step])
    ok = np.isfinite(loss) & (loss > 0)
    past = (step >= BURN_IN * steps) & (step >= sched.get("warmup_steps", 0)) & ok
    d = tokens * step / steps
    if annealing.decays(sched):
        s1, s2 = annealing.areas(schedule_of_record(rec, int(steps)), tokens, step)
        usable = (step >= steps) & ok
        in_fit = past | usable
    else:
        s1, s2, usable, in_fit = d, np.zeros_like(d), past, past
    final = rec.get("final") or {}
    examples = _f(final.get("tokens")) if metric == "accuracy" else math.nan
    sd, msd = _seeds(rec)
    return Run(name=str(rec.get("rung")), n=float(n), d=d, s1=s1, s2=s2, loss=loss, metric=met,
               step=step, usable=usable, in_fit=in_fit, compute=_f(rec.get("train_flops")), final_loss=pts[max(pts)][0],
               final_metric=pts[max(pts)][1], schedule=str(sched.get("name")), excluded=rec_mod.incapable(rec),
               examples=examples if math.isfinite(examples) else 0.0, seed_sd=sd, seed_metric_sd=msd)


def recipes(points: list[dict]) -> list[tuple[str, list[dict]]]:
    """[(label, points)]: the main ladder ("" label: the first record's schedule, one record per
    compute level, the oldest) and one series per other record over the main ladder's smaller
    rungs, labelled by its rung (a reproduction or recipe variant at an existing level, or a
    rung with another schedule)."""
    if not points:
        return []
    sched = rec_mod.schedule(points[0]).get("name")
    main, extra = [], []
    for p in points:  # oldest first within a compute level: series_points sorts by compute
        c = _f(p.get("train_flops"))
        clash = any(abs(math.log(c / _f(q.get("train_flops")))) < math.log(SAME_COMPUTE) for q in main)
        (extra if clash or rec_mod.schedule(p).get("name") != sched else main).append(p)
    out = [("", main)]
    for p in extra:
        below = [q for q in main if _f(q.get("train_flops")) < _f(p.get("train_flops")) / SAME_COMPUTE]
        out.append((str(p.get("rung")), below + [p]))
    return out
