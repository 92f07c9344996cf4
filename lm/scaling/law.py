"""Step 1: the surrogate loss as L(N, D) = E + A N^-a + B D^-b - C S2, fitted on every usable eval point.

N: non-embedding parameters, D: training tokens seen at the eval. The fit is the published
ladders' recipe (Hoffmann et al. 2022, Approach 3): Huber loss (delta 1e-3) on
log L_pred - log L, L_pred = logsumexp(e, a0 - a log(N/N0), b0 - b log(D/D0)), minimised by
L-BFGS-B from a grid of starts; N0, D0 are the geometric means of the points (conditioning).
With fewer than two distinct N the N term is not identified: it is folded into E and the fit is
a per-N learning curve L(D) = E + B D^-b ("per_n"), which can only extrapolate in D.

Decaying learning rates (lm.scaling.annealing; Tissue et al. 2024): D is then the forward area
S1 (tokens weighted by lr / peak lr) and S2 the annealing area (the share of the peak LR taken
off so far, delayed by a momentum); C >= 0 is the loss a finished anneal takes off. The fit is
on log(exp(logsumexp(...)) - C S2). Without S2 (None or all zeros) C is fixed at 0 and the fit
is the one above, step for step.

`floor=False` fixes E = 0 (a pure power law, the optimistic reading); predictions use both
fits and their bootstrap refits, so the interval covers the floor's uncertainty.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from lm.scaling.fitting import one_blas_thread

HUBER_DELTA = 1e-3


@dataclasses.dataclass(frozen=True)
class Law:
    """L(N, D, S2) = E + A (N/N0)^-a + B (D/D0)^-b - C S2."""

    E: float
    A: float
    a: float
    B: float
    b: float
    n0: float
    d0: float
    floor: bool = True   # E free (True) or fixed at 0
    per_n: bool = False  # one N only: A N^-a folded into E
    resid: float = 0.0   # std of the log residuals of the fit
    C: float = 0.0       # loss a finished anneal takes off (S2 = 1: the whole peak LR)

    def __call__(self, n, d, s2=0.0):
        n = np.asarray(n, dtype=np.float64)
        d = np.asarray(d, dtype=np.float64)
        out = self.E + self.A * (n / self.n0) ** -self.a + self.B * (d / self.d0) ** -self.b
        if self.C:
            out = out - self.C * np.asarray(s2, dtype=np.float64)
        return out

    def describe(self) -> str:
        anneal = f" - {self.C:.3g} S2" if self.C else ""
        if self.per_n:
            return f"L(D) = {self.E:.4g} + {self.B:.3g} (D/{self.d0:.3g})^-{self.b:.3f}{anneal}"
        return (f"L(N,D) = {self.E:.4g} + {self.A:.3g} (N/{self.n0:.3g})^-{self.a:.3f} "
                f"+ {self.B:.3g} (D/{self.d0:.3g})^-{self.b:.3f}{anneal}")


def _huber(r, delta=HUBER_DELTA):
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def _huber_grad(r, delta=HUBER_DELTA):
    return np.clip(r, -delta, delta)


def fit_law(n, d, loss, *, floor: bool = True, per_n: bool | None = None,
            start: Law | None = None, s2=None) -> Law:
    """Fit L(N, D) (or L(D) when per_n / one distinct N) to points; ValueError when it cannot.

    `s2`: the annealing area at each point (lm.scaling.annealing; D is then the forward area
    S1). With a free floor, some S2 > 0 and more points than the law without C has parameters,
    the law gains C = k E, k in [0, 0.99]: the floor term becomes E (1 - k S2), so the loss stays
    positive at any scale (S2 <= 1: a full anneal cannot take off more than the floor). Otherwise
    (no floor, no S2, too few points) C = 0 and the fit is exactly the one without `s2`."""
    from scipy import optimize  # lazily: listing the archive should not pay for scipy

    n = np.asarray(n, dtype=np.float64)
    d = np.asarray(d, dtype=np.float64)
    y = np.asarray(loss, dtype=np.float64)
    if not (n.shape == d.shape == y.shape) or y.size < 2:
        raise ValueError(f"a law needs at least two (N, D, loss) points, got {y.size}")
    if np.any(n <= 0) or np.any(d <= 0) or np.any(y <= 0) or not np.all(np.isfinite(y)):
        raise ValueError("N, D and the loss must be positive and finite")
    anneal = False
    if s2 is not None:
        s2 = np.asarray(s2, dtype=np.float64)
        if s2.shape != y.shape or not np.all(np.isfinite(s2)) or np.any(s2 < 0) or np.any(s2 > 1):
            raise ValueError("S2 must be one share of the peak LR in [0, 1] per point")
        anneal = floor and bool(np.any(s2 > 0))
    if per_n is None:
        per_n = np.unique(n).size < 2
    if np.unique(d).size < 2 and (per_n or np.unique(n).size < 2):
        raise ValueError("a law needs points at two or more token counts")
    n0, d0 = float(np.exp(np.mean(np.log(n)))), float(np.exp(np.mean(np.log(d))))
    x, z, ly = np.log(n / n0), np.log(d / d0), np.log(y)
    y_min = float(y.min())
    # parameter vector: [e, k?]? + [a0, a]? + [b0, b]
    names = (["e"] if floor else []) + ([] if per_n else ["a0", "a"]) + ["b0", "b"]
    if anneal and len(names) < y.size:  # C only with a point to spare: else the law without it
        names.insert(1, "k")
    anneal = "k" in names
    if len(names) > y.size:
        raise ValueError(f"{len(names)} parameters from {y.size} points")

    def unpack(p):
        v = dict(zip(names, p))
        return v.get("e"), v.get("a0"), v.get("a", 0.0), v["b0"], v["b"]

    def objective(p):
        e, a0, a, b0, b = unpack(p)
        terms = [b0 - b * z]
        if e is not None:
            if anneal:
                k = p[names.index("k")]
                left = 1.0 - k * s2  # the floor's share an anneal leaves
                terms.append(e + np.log(left))
            else:
                terms.append(np.full_like(z, e))
        if a0 is not None:
            terms.append(a0 - a * x)
        t = np.stack(terms)
        m = t.max(axis=0)
        w = np.exp(t - m)
        s = w.sum(axis=0)
        r = m + np.log(s) - ly
        g = _huber_grad(r) / (y.size * HUBER_DELTA)  # scaled: L-BFGS tolerances are absolute
        soft = w / s  # d lse / d term
        grads = {"b0": np.sum(g * soft[0]), "b": np.sum(g * soft[0] * -z)}
        i = 1
        if e is not None:
            grads["e"] = np.sum(g * soft[i])
            if anneal:
                grads["k"] = np.sum(g * soft[i] * -s2 / left)
            i += 1
        if a0 is not None:
            grads["a0"] = np.sum(g * soft[i])
            grads["a"] = np.sum(g * soft[i] * -x)
        return float(np.sum(_huber(r)) / (y.size * HUBER_DELTA)), np.array([grads[k] for k in names])

    bounds = {"e": (-20.0, math.log(float(y.max()) if anneal else y_min)), "k": (0.0, 0.99),
              "a0": (-20.0, 10.0), "a": (0.0, 3.0), "b0": (-20.0, 10.0), "b": (0.0, 3.0)}
    starts = _starts(names, bounds, start, n0, d0, y, floor, per_n)
    with one_blas_thread():
        best = _minimize(optimize, objective, starts, [bounds[k] for k in names])
    if best is None:
        raise ValueError("law fit failed")
    e, a0, a, b0, b = unpack(best.x)
    law = Law(E=math.exp(e) if e is not None else 0.0, A=math.exp(a0) if a0 is not None else 0.0,
              a=float(a), B=math.exp(b0), b=float(b), n0=n0, d0=d0, floor=floor, per_n=bool(per_n))
    if anneal:
        law = dataclasses.replace(law, C=float(best.x[names.index("k")]) * law.E)
    r = np.log(law(n, d, 0.0 if s2 is None else s2)) - ly
    return dataclasses.replace(law, resid=float(np.sqrt(np.mean(r * r))))


def _starts(names, bounds, start, n0, d0, y, floor, per_n) -> list:
    """Start points: `start`'s parameters moved to the new N0, D0, else a grid over the floor's
    share of the best loss and the two exponents (the anneal's share k of the floor from 0.1)."""
    y_min = float(y.min())
    starts = []
    if start is not None:
        s = {"e": math.log(max(start.E, 1e-8)), "a0": math.log(max(start.A, 1e-8)), "a": start.a,
             "b0": math.log(max(start.B, 1e-8)), "b": start.b, "k": start.C / start.E if start.E > 0 else 0.0}
        # the refit's N0, D0 differ from the start's: move the amplitudes to the new reference
        s["a0"] += start.a * math.log(start.n0 / n0) if start.A > 0 else 0.0
        s["b0"] += start.b * math.log(start.d0 / d0)
        starts.append([min(max(s[k], bounds[k][0]), bounds[k][1]) for k in names])
    else:
        for fl in (0.3, 0.8):
            for a in (0.3, 1.0):
                for b in (0.2, 0.5, 1.2):
                    span = max(float(y.mean()) - (fl * y_min if floor else 0.0), 1e-6)
                    v = {"e": math.log(fl * y_min), "a0": math.log(span / 2), "a": a,
                         "b0": math.log(span / (1 if per_n else 2)), "b": b, "k": 0.1}
                    starts.append([min(max(v[k], bounds[k][0]), bounds[k][1]) for k in names])
                if per_n:
                    break
            if not floor:
                break
    return starts


def _minimize(optimize, objective, starts, bounds):
    best = None
    for p0 in starts:
        sol = optimize.minimize(objective, np.array(p0), jac=True, method="L-BFGS-B", bounds=bounds,
                                options=dict(ftol=1e-12, gtol=1e-9, maxiter=500))
        if np.all(np.isfinite(sol.x)) and (best is None or sol.fun < best.fun):
            best = sol
    return best
