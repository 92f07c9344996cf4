"""Bounded least squares from several starts: the trend and link fits share it."""

from __future__ import annotations


def best_fit(residual, starts):
    """The lowest-cost scipy least_squares solution over (p0, lower, upper) starts; None if
    every start fails (a start outside its bounds raises ValueError in scipy and is skipped)."""
    from scipy import optimize  # lazily: listing the archive should not pay for scipy

    best = None
    for p0, lower, upper in starts:
        try:
            sol = optimize.least_squares(residual, p0, bounds=(lower, upper))
        except ValueError:
            continue
        if best is None or sol.cost < best.cost:
            best = sol
    return best
