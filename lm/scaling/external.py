"""The forecasts' outside check: the backtest on published training runs (lm/scaling/data).

Hoffmann et al. (2022) runs (N, D, final loss; see lm/scaling/data/README.md) are grouped in
compute levels of a factor 2. Each level from the third on is predicted from every prefix of
the smaller levels by the archive's own forecast (lm.scaling.forecast, L(N, D) with its
intervals; each run one cosine-schedule point). Crossings: for each held-out level, the
criterion "loss <= the best loss of that level"; the predicted crossing compute (the law along
the compute-optimal line through the prefix's best runs) over the cheapest run that met it.

    python -m lm.scaling.external [--samples=60] [--json=PATH]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time

import numpy as np

from lm.scaling import backtest as bt
from lm.scaling import forecast as fc
from lm.scaling.runs import Run

DATA = os.path.join(os.path.dirname(__file__), "data", "hoffmann2022_runs.csv")


def load(path: str = DATA) -> list[Run]:
    """One Run per row (a single final point, cosine schedule)."""
    runs = []
    with open(path) as f:
        for i, row in enumerate(csv.DictReader(f)):
            n, d, c, loss = (float(row[k]) for k in ("n_params", "tokens", "train_flops", "loss"))
            one = np.ones(1)
            runs.append(Run(name=f"run{i}", n=n, d=d * one, loss=loss * one, metric=loss * one, step=one,
                            usable=one > 0, compute=c, final_loss=loss, final_metric=loss, schedule="cosine"))
    return runs


def levels(runs: list[Run]) -> list[list[Run]]:
    """Runs grouped by compute octave, cheapest first."""
    c0 = min(r.compute for r in runs)
    out = {}
    for r in runs:
        out.setdefault(int(math.floor(math.log2(r.compute / c0))), []).append(r)
    return [out[k] for k in sorted(out)]


def series(runs: list[Run], threshold: float) -> fc.Series:
    crit = dict(metric="loss", comparator="<=", threshold=threshold)
    return fc.Series(metric="loss", crit=crit, runs=runs, excluded={}, per_n=False, lower=True,
                     threshold=threshold, chance=0.0)


def crossings(lv: list[list[Run]], samples: int = 30, seed: int = 0) -> list[dict]:
    """For each prefix (>= 2 levels) and each later level h: the predicted compute at which the
    loss reaches level h's best (the ensemble's median crossing, as the archive's forecasts),
    over the cheapest run that reached it."""
    every = [r for level in lv for r in level]
    rows = []
    for j in range(2, len(lv)):
        prefix = [r for level in lv[:j] for r in level]
        s_prefix = series(prefix, 0.0)
        mains = fc._fit_both(*fc._fit_points(prefix), False)
        ens = fc._ensemble(s_prefix, mains, None, samples, np.random.default_rng(seed))
        dirn = fc.direction(prefix)
        for h in range(j, len(lv)):
            thr = min(r.final_loss for r in lv[h])
            actual = min(r.compute for r in every if r.final_loss <= thr)
            s = float(np.median(fc.member_crossings(ens, dirn, lambda _: thr)))
            pred = s * dirn.c_top if math.isfinite(s) else math.inf
            rows.append(dict(prefix_levels=j, level=h, threshold=thr, actual=actual, pred=pred,
                             factor=pred / actual, next_rung=h == j))
    return rows


def run(samples: int = 60, path: str = DATA) -> dict:
    """{"rows", "crossings", "summary"}: the external backtest."""
    runs = load(path)
    lv = levels(runs)
    rows = bt.backtest_levels(series(runs, 0.0), lv, samples=samples)  # each fit holds BLAS to one thread
    cross = crossings(lv, samples)
    summary = bt.summarize(rows)
    errs = [max(c["factor"], 1 / c["factor"]) if 0 < c["factor"] < math.inf else math.inf for c in cross]
    summary["crossing_factor"] = float(np.median(errs)) if errs else None
    summary["crossing_n"] = len(errs)
    summary["met"]["crossing_factor"] = None if not errs else summary["crossing_factor"] <= bt.GOALS["crossing_factor"]
    summary["crossing_late_share"] = float(np.mean([c["factor"] > 1 for c in cross])) if cross else None
    return dict(rows=rows, crossings=cross, summary=summary)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=30)
    p.add_argument("--json", default=None, help="also write rows and summary here")
    p.add_argument("--data", default=DATA)
    a = p.parse_args(argv)
    if not os.path.exists(a.data):
        print(f"{a.data}: no such file; regenerate it with scripts/fetch_scaling_curves.py", file=sys.stderr)
        return 1
    t0 = time.time()
    out = run(a.samples, a.data)
    print(f"external backtest: Hoffmann et al. (2022) runs, {len(out['rows'])} predictions, "
          f"{time.time() - t0:.1f} s")
    print(bt.format_summary(out["summary"]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
