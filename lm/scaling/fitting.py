"""Shared by the law and link fits: bounded least squares from several starts, and the BLAS guard.

Why one BLAS thread: the fits call BLAS on vectors of 5 numbers thousands of times; a threaded
OpenBLAS on a busy machine spends milliseconds per call waking its threads (measured: the
archive backtest took 27 min on 2 shared cores, 38 s held to one thread). threadpoolctl is an
install requirement; the guard is entered once per forecast and is cheap when nested.
"""

from __future__ import annotations

import contextlib
import threading

_state = threading.local()


@contextlib.contextmanager
def one_blas_thread():
    """Hold BLAS (OpenBLAS, MKL, BLIS) to one thread inside; re-entrant and cheap when nested
    (threadpoolctl inspects every loaded library each time it is entered: ~1 ms)."""
    if getattr(_state, "depth", 0):
        _state.depth += 1
        try:
            yield
        finally:
            _state.depth -= 1
        return
    # scipy first: threadpoolctl limits only the BLAS libraries already loaded, and scipy's own
    # OpenBLAS loads with it (imported later, it would keep every thread)
    import scipy.optimize  # noqa: F401

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # a broken install: slower, same numbers
        limits = contextlib.nullcontext()
    else:
        limits = threadpool_limits(1, user_api="blas")
    _state.depth = 1
    try:
        with limits:
            yield
    finally:
        _state.depth = 0


def blas_threads() -> list[int]:
    """The thread counts of the loaded BLAS libraries (what the guard changes; for tests)."""
    from threadpoolctl import threadpool_info

    return [i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"]


def best_fit(residual, starts):
    """The lowest-cost scipy least_squares solution over (p0, lower, upper) starts; None if
    every start fails (a start outside its bounds raises ValueError in scipy and is skipped)."""
    from scipy import optimize  # lazily: listing the archive should not pay for scipy

    best = None
    with one_blas_thread():
        for p0, lower, upper in starts:
            try:
                sol = optimize.least_squares(residual, p0, bounds=(lower, upper))
            except ValueError:
                continue
            if best is None or sol.cost < best.cost:
                best = sol
    return best
