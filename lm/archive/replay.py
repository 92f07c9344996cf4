"""Replay: the not-yet loop re-decided in the order it ran, seeing only the records before each.

For every series and every rung in the order its records were written (creation time), the
replay asks what a user would have been told with only the earlier records in the archive:
before the run, the forecast for it (loss and metric with their 80% interval, and the cheapest
rung of the ladder predicted to pass), and after it, the verdict under today's rules. Beside
that stands what happened: the actual metric, the verdict recorded at the time, and whether
the series passes later. The loop "stops" at a replayed `failed` or `inverse` (rerun
--status=not_yet no longer takes the series); a stop on a series that later passes is the
false "failed" this test of the loop looks for.
"""

from __future__ import annotations

from lm.archive.records import created_order, finite, group_series, meets, series_points
from lm.archive.report import fmt, fmt_band
from lm.archive.verdict import decide_verdict, trend_of
from lm.scaling import forecast
from lm.scaling import records as scaling_records

STOPS = ("failed", "inverse")


def _target(record: dict) -> dict | None:
    """{n, d, compute} of a run, as it would have been estimated before it started."""
    n, d = scaling_records.n_params(record), scaling_records.tokens(record)
    if not (n and d and finite(record.get("train_flops"))):
        return None
    return dict(n=float(n), d=float(d), compute=float(record["train_flops"]))


def _ladder_ahead(record: dict, series: list[dict]) -> list[dict]:
    """The series' rungs at or above this run's compute ({rung, n, d}, cheapest first): the
    ladder a user could still climb, with N and D as its records show them."""
    by_rung = {}
    for r in series:
        t = _target(r)
        if t and t["compute"] >= record.get("train_flops", 0) and r.get("rung") not in by_rung:
            by_rung[r["rung"]] = dict(rung=r["rung"], n=t["n"], d=t["d"], compute=t["compute"])
    return sorted(by_rung.values(), key=lambda c: c["compute"])


def told_before(record: dict, before: list[dict], series: list[dict], samples: int) -> dict:
    """The forecast a rerun would have stored for this run, from the records before it (the
    rungs of this run's ladder: a redesigned ladder retires the old rungs)."""
    points = [p for p in series_points(before + [record]) if p["id"] != record["id"]]
    target = _target(record)
    trend = trend_of(points, target=target, samples=samples) if len(points) >= 2 else None
    if trend is None:
        return dict(prediction=None, cheapest=None)
    at = trend.get("at") or {}
    _, cheapest = forecast.rungs_ahead(trend, _ladder_ahead(record, series))
    return dict(prediction=dict(surrogate=at.get("surrogate"), interval=at.get("surrogate_interval"),
                                metric=at.get("metric"), passes=at.get("passes")),
                cheapest=cheapest, reason=trend.get("reason"))


def replay_series(series: list[dict], samples: int = 40) -> list[dict]:
    """One row per record of a series (in the order written): told before, decided after."""
    series = created_order(series)
    rows = []
    for i, rec in enumerate(series):
        before = series[:i]
        crit = rec.get("criterion") or {}
        row = dict(id=rec["id"], experiment=rec.get("experiment"), variant=rec.get("variant", ""),
                   rung=rec.get("rung"), created=rec.get("created"), metric=crit.get("metric"),
                   actual=rec.get("metric_value"), actual_loss=rec.get("surrogate_value"),
                   recorded=rec.get("verdict"),
                   passes_later=any(meets(r.get("metric_value"), crit.get("comparator", "<="),
                                          crit.get("threshold", 0.0)) for r in series[i + 1:]))
        if rec.get("verdict") == "broken" or not crit or rec.get("metric_value") is None:
            # crashed, or diverged (the runner's "failed"): no metric to decide on again
            rows.append(dict(row, replayed=rec.get("verdict"), reason=rec.get("reason"),
                             prediction=None, cheapest=None))
            continue
        row.update(told_before(rec, before, series, samples))
        try:
            verdict, reason, _ = decide_verdict(rec, before)
        except Exception as err:  # one odd record must not end the replay of the others
            verdict, reason = "inconclusive", f"verdict could not be decided: {err!r}"
        rows.append(dict(row, replayed=verdict, reason=reason))
    return rows


def replay(records: list[dict], experiment: str | None = None, samples: int = 40) -> list[tuple]:
    """[(series key, rows)] for every series (or those of `experiment`)."""
    out = []
    for key, recs in group_series(records).items():
        if experiment and key[0] != experiment:
            continue
        out.append((key, replay_series(recs, samples)))
    return out


def stops(rows: list[dict]) -> dict:
    """Where the replayed loop stops (first failed/inverse), the first rung that passes, and
    whether the stop is a false "failed" (the series passes later)."""
    stop = next((r for r in rows if r["replayed"] in STOPS), None)
    first_pass = next((r for r in rows if r["replayed"] == "passed"), None)
    false_stop = bool(stop and any(r["replayed"] == "passed" for r in rows[rows.index(stop) + 1:]))
    return dict(stop=stop and stop["rung"], first_pass=first_pass and first_pass["rung"],
                false_failed=sum(r["replayed"] == "failed" and r["passes_later"] for r in rows),
                false_stop=false_stop)


def format_replay(results: list[tuple]) -> str:
    """Markdown: per series a row per run (told before | happened | decided after), and the
    totals the loop is judged by."""
    parts, false_failed, false_stops = [], 0, []
    for key, rows in results:
        name = (key[0] or "?") + (f" [{key[5]}]" if key[5] else "")
        parts += [f"### {name}: {key[4]} {key[1]} {key[2]} {key[3]}", "",
                  "| rung | created | predicted loss [80%] | predicted metric | cheapest rung to pass "
                  "| actual loss | actual metric | replayed verdict | recorded verdict | passes later |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            p = r.get("prediction") or {}
            parts.append(f"| {r['rung']} | {r['created']} | {fmt_band(p.get('surrogate'), p.get('interval'))} | "
                         f"{fmt(p.get('metric'))} | {r.get('cheapest') or '-'} | {fmt(r['actual_loss'])} | "
                         f"{fmt(r['actual'])} | {r['replayed']} | {r['recorded']} | "
                         f"{'yes' if r['passes_later'] else 'no'} |")
        s = stops(rows)
        false_failed += s["false_failed"]
        if s["false_stop"]:
            false_stops.append(name)
        parts += ["", f"loop: stops at {s['stop'] or 'never'}; first pass {s['first_pass'] or 'none'}; "
                  f"false failed: {s['false_failed']}", ""]
        parts += [f"- {r['rung']}: {r['replayed']}: {r['reason']}" for r in rows] + [""]
    parts += [f"**All series: {false_failed} replayed `failed` verdicts on a series that passes later; "
              f"loops stopped before a pass: {', '.join(false_stops) or 'none'}.**", ""]
    return "\n".join(parts)
