"""The archive of run records: write once, read back, group into series, decide verdicts.

A record is one JSON file `<archive>/<id>.json`, written atomically (a hidden temp file in the
same directory, fsync, then a hard link or os.replace to the final name) and never edited
afterwards, so a killed run leaves either nothing or a whole record, and two runs writing at
once both land (their ids differ in a random suffix). Files that are not records (corrupt
JSON, someone else's JSON, temp files) are skipped with a warning.

Verdict rules (`decide_verdict`), in this order:

1. broken:       the run crashed or was interrupted (decided by the runner; no metric).
2. failed:       the criterion's metric is missing or not finite (the run diverged).
3. passed:       the metric meets the criterion (metric comparator threshold).
4. inconclusive: fewer than two points of the series (same experiment, criterion and
                 variant, see `series_key`) at different compute, or the change of the metric
                 from the smallest to the largest compute is no bigger than the noise
                 (2 x the larger std of the last three evaluations of either end run).
5. inverse:      the metric moves away from the threshold as compute grows.
6. not_yet:      the metric moves towards the threshold and the floor-term trend of the loss,
                 mapped to the metric, crosses the threshold at a finite compute (lm.scaling).
7. failed:       it improves, but the fitted trend flattens before the threshold ("no trend").
"""

from __future__ import annotations

import json
import math
import os
import secrets
import time
import warnings

import numpy as np

from lm import scaling
from lm.evals import criteria
from lm.scaling import backtest as backtest_mod
from lm.scaling import forecast
from lm.scaling import records as scaling_records
from lm.files import is_main_process

SCHEMA = "lm.record/1"
DEFAULT_ARCHIVE = os.path.join("experiments", "archive")
VERDICTS = ("passed", "not_yet", "failed", "inverse", "inconclusive", "broken")
COMPARATORS = {"<=": lambda v, t: v <= t, "<": lambda v, t: v < t,
               ">=": lambda v, t: v >= t, ">": lambda v, t: v > t}


class ArchiveWarning(UserWarning):
    """A file in the archive that is not a readable record."""


# ---------------------------------------------------------------------------------------------
# Writing and reading records.

def new_id(name: str, rung: str) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in f"{name}-{rung}")
    return f"{stamp}-{safe}-{secrets.token_hex(3)}"


def _jsonable(x):
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if hasattr(x, "to_dict"):
        return x.to_dict()
    return str(x)


def write_record(record: dict, archive_dir: str) -> str:
    """Write a new record atomically and return its path; never replaces an existing file.
    In a multi-process run only process 0 writes (the others get the path it would have)."""
    if not is_main_process():
        return os.path.join(archive_dir, record["id"] + ".json")
    os.makedirs(archive_dir, exist_ok=True)
    record = dict(record)
    record.setdefault("schema", SCHEMA)
    for _ in range(100):
        path = os.path.join(archive_dir, record["id"] + ".json")
        tmp = os.path.join(archive_dir, f".{record['id']}.{os.getpid()}.{secrets.token_hex(3)}.tmp")
        try:
            with open(tmp, "w") as f:
                json.dump(record, f, indent=1, default=_jsonable)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
        except BaseException:  # a full disk: no half-written temp file left behind
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        try:
            try:
                os.link(tmp, path)  # fails if the name exists: a record is never overwritten
            except FileExistsError:
                record["id"] = new_id(record.get("experiment", "x"), record.get("rung", "x"))
                continue
            except OSError:  # file systems without hard links
                if os.path.exists(path):
                    record["id"] = new_id(record.get("experiment", "x"), record.get("rung", "x"))
                    continue
                os.replace(tmp, path)
            return path
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise RuntimeError(f"could not find a free record name in {archive_dir}")


def load_records(archive_dir: str) -> list[dict]:
    """Every readable record, oldest first; other files are skipped with an ArchiveWarning."""
    if not os.path.isdir(archive_dir):
        return []
    records = []
    for name in sorted(os.listdir(archive_dir)):
        path = os.path.join(archive_dir, name)
        if name.startswith(".") or name == "README.md" or not os.path.isfile(path):
            continue
        if not name.endswith(".json"):
            warnings.warn(f"skipping {path}: not a .json record", ArchiveWarning, stacklevel=2)
            continue
        try:
            with open(path) as f:
                rec = json.load(f)
        except (OSError, ValueError) as e:
            warnings.warn(f"skipping {path}: unreadable JSON ({e})", ArchiveWarning, stacklevel=2)
            continue
        if not isinstance(rec, dict) or rec.get("schema") != SCHEMA or "id" not in rec:
            warnings.warn(f"skipping {path}: not an lm run record (no schema {SCHEMA!r})",
                          ArchiveWarning, stacklevel=2)
            continue
        rec["_path"] = path
        records.append(rec)
    records.sort(key=lambda r: (r.get("created", ""), r["id"]))
    return records


def find_record(records: list[dict], ident: str) -> dict:
    """The record whose id equals, or uniquely starts with / contains, `ident`."""
    exact = [r for r in records if r["id"] == ident or os.path.basename(r.get("_path", "")) == ident]
    if exact:
        return exact[0]
    hits = [r for r in records if r["id"].startswith(ident)] or [r for r in records if ident in r["id"]]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise FileNotFoundError(f"no record with id {ident!r} in the archive ({len(records)} records)")
    raise ValueError(f"{ident!r} matches {len(hits)} records: {[r['id'] for r in hits][:5]}")


# ---------------------------------------------------------------------------------------------
# Series: the runs of one experiment that a trend is fitted across.

def lower_is_better(comparator: str) -> bool:
    return comparator in ("<=", "<")


def meets(value, comparator: str, threshold: float) -> bool:
    return value is not None and math.isfinite(value) and COMPARATORS[comparator](value, threshold)


def series_key(record: dict) -> tuple:
    """Runs are comparable when experiment, criterion and variant (non-scale overrides) agree."""
    crit = record.get("criterion", {})
    return (record.get("experiment"), crit.get("metric"), crit.get("comparator"),
            crit.get("threshold"), crit.get("split"), record.get("variant", ""))


def point_key(record: dict) -> tuple:
    return (record.get("rung"), tuple(record.get("scale_overrides", [])))


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def series_points(records: list[dict]) -> list[dict]:
    """The latest usable record per (rung, scale overrides), sorted by training compute.

    A redesigned ladder retires the old rungs: only rungs of the newest record's ladder count
    (records without a ladder keep every rung)."""
    latest = {}
    current = next((r.get("ladder") for r in reversed(records) if r.get("ladder")), None)
    for r in records:
        if current and r.get("rung") not in current:
            continue
        if r.get("verdict") == "broken" or not _finite(r.get("metric_value")):
            continue
        if not _finite(r.get("train_flops")) or r["train_flops"] <= 0:
            continue
        latest[point_key(r)] = r  # records come oldest first
    return sorted(latest.values(), key=lambda r: r["train_flops"])


def eval_noise(record: dict) -> float:
    """Std of the last three evaluations of the criterion's metric in the run's history."""
    key = criteria.history_key(record.get("criterion", {}).get("metric", ""))
    vals = [h[key] for h in record.get("history", []) if _finite(h.get(key))]
    return float(np.std(vals[-3:])) if len(vals) >= 2 else 0.0


def trend_of(points: list[dict], *, target: dict | None = None, target_compute=None,
             samples: int = 100) -> dict | None:
    """The series' forecast (lm.scaling.forecast: L(N, D) on every eval point, sigmoid link,
    crossing, phase changes); None when it cannot be fitted. Records without N and D
    (hand-made, foreign) fall back to the compute-only fit L(C) of lm.scaling.compute.
    target: {n, d, compute} of a run about to start (predicted as "at")."""
    if points and all(scaling_records.n_params(p) and scaling_records.tokens(p) for p in points):
        return forecast.forecast(points, target=target, samples=samples)
    pts = [p for p in points if _finite(p.get("surrogate_value"))]
    if len({p["train_flops"] for p in pts}) < 2:
        return None
    crit = pts[-1]["criterion"]
    noise = max(eval_noise(p) for p in pts)
    if target_compute is None and target:
        target_compute = target.get("compute")
    out = scaling.predict([p["train_flops"] for p in pts], [p["surrogate_value"] for p in pts],
                          [p["metric_value"] for p in pts], threshold=crit["threshold"],
                          lower_is_better=lower_is_better(crit["comparator"]), noise=noise,
                          target_compute=target_compute, samples=samples)
    out.update(kind="L(C)", unpredictable=False)
    return out


def decide_verdict(record: dict, archive: list[dict]) -> tuple[str, str, dict | None]:
    """(verdict, reason, trend) for a finished run, given the archive it joins (rules above)."""
    crit = record["criterion"]
    value = record.get("metric_value")
    metric = f"{crit['split']} {crit['metric']}"
    target = f"{crit['comparator']} {crit['threshold']}"
    if not _finite(value):
        return "failed", f"{metric} is {value} (not finite: the run diverged)", None
    if meets(value, crit["comparator"], crit["threshold"]):
        return "passed", f"{metric} = {value:.4g} {target}", None
    incapable = scaling_records.incapable(record)
    if incapable:
        return "inconclusive", (f"{metric} = {value:.4g} misses {target}, but this rung cannot meet "
                                f"it at any size ({incapable}); left out of the scaling fits"), None
    key = series_key(record)
    same = [r for r in archive if series_key(r) == key and r.get("id") != record.get("id")]
    points = [p for p in series_points(same + [record]) if not scaling_records.incapable(p)]
    missed = f"{metric} = {value:.4g} misses {target}"
    if len({p["train_flops"] for p in points}) < 2:
        return "inconclusive", f"{missed}; only one rung of this series so far: no trend yet", None
    first, last = points[0], points[-1]
    sign = 1.0 if lower_is_better(crit["comparator"]) else -1.0
    gain = sign * (first["metric_value"] - last["metric_value"])  # > 0: towards the threshold
    noise = 2.0 * max(eval_noise(first), eval_noise(last))
    span = f"from {first['metric_value']:.4g} ({first['rung']}) to {last['metric_value']:.4g} ({last['rung']})"
    if abs(gain) <= max(noise, 1e-9):
        return "inconclusive", f"{missed}; change {span} is within noise ({noise:.2g})", None
    if gain < 0:
        return "inverse", f"{missed}; worse with scale: {span}", None
    trend = trend_of(points)
    if trend is None:
        return "inconclusive", (f"{missed}; improves {span}, but the rungs give too few usable eval "
                                "points for a scaling fit"), None
    if trend.get("unpredictable") or not trend["no_trend"]:
        return "not_yet", f"{missed}; improves with scale {span}; {trend['reason']}", trend
    return "failed", f"{missed}; improves {span} but {trend['reason']}", trend


# ---------------------------------------------------------------------------------------------
# Listing and the report.

def _fmt(x, spec=".4g"):
    return format(x, spec) if _finite(x) else ("-" if x is None else str(x))


def summary_row(r: dict) -> dict:
    crit = r.get("criterion", {})
    return dict(id=r["id"], experiment=r.get("experiment"), rung=r.get("rung"),
                variant=r.get("variant", ""), verdict=r.get("verdict"), metric=crit.get("metric"),
                value=r.get("metric_value"), comparator=crit.get("comparator"),
                threshold=crit.get("threshold"), loss=r.get("surrogate_value"),
                train_flops=r.get("train_flops"), wall_time=r.get("wall_time"),
                parent=r.get("parent"), created=r.get("created"), path=r.get("_path"))


def format_list(records: list[dict]) -> str:
    head = f"{'id':<52} {'verdict':<12} {'criterion':<28} {'loss':>7} {'FLOPs':>9} {'wall':>6}"
    lines = [head, "-" * len(head)]
    for r in records:
        s = summary_row(r)
        crit = f"{s['metric']}={_fmt(s['value'])} {s['comparator']}{_fmt(s['threshold'], 'g')}"
        lines.append(f"{s['id']:<52} {s['verdict'] or '-':<12} {crit:<28} {_fmt(s['loss']):>7} "
                     f"{_fmt(s['train_flops'], '.2e'):>9} {_fmt(s['wall_time'], '.0f'):>5}s"
                     + (f"  <- {s['parent']}" if s["parent"] else "")
                     + (f"  [{s['variant']}]" if s["variant"] else ""))
    return "\n".join(lines)


def format_show(r: dict) -> str:
    crit = r.get("criterion", {})
    prov = r.get("provenance", {})
    lines = [f"{r['id']}  ({r.get('_path', '')})",
             f"experiment   {r.get('experiment')}  file {r.get('experiment_file')}  rung {r.get('rung')}"
             + (f"  variant [{r['variant']}]" if r.get("variant") else ""),
             f"hypothesis   {r.get('hypothesis')}",
             f"criterion    {crit.get('split')} {crit.get('metric')} {crit.get('comparator')} "
             f"{crit.get('threshold')}",
             f"verdict      {r.get('verdict')}: {r.get('reason')}",
             "final        " + ", ".join(f"{k}={_fmt(v)}" for k, v in (r.get("final") or {}).items()),
             f"scale        params {r.get('num_params')}, FLOPs {_fmt(r.get('train_flops'), '.3e')}, "
             f"tokens {r.get('tokens_seen')}, wall {_fmt(r.get('wall_time'), '.1f')} s",
             f"fit inputs   N (non-embedding) {_fmt(scaling_records.n_params(r), '.4g')}, "
             f"D {_fmt(scaling_records.tokens(r), '.4g')}, schedule {scaling_records.schedule(r)}",
             f"config       hash {r.get('config_hash')}, seed {r.get('seed')}, overrides {r.get('overrides')}",
             f"provenance   git {prov.get('git_commit')} dirty={prov.get('git_dirty')}, "
             f"{prov.get('versions')}",
             f"devices      {r.get('devices')}  mesh {r.get('mesh')}",
             f"history      {len(r.get('history') or [])} entries",
             f"parent       {r.get('parent')}",
             f"rerun with   {r.get('command')}"]
    p = r.get("prediction")
    if p:
        at = p.get("at") or {}
        band = at.get("surrogate_interval")
        band = f"[{_fmt(band[0])}, {_fmt(band[1])}]" if band else ""
        lines.append(f"predicted    before the run, from {len(p.get('from_records', []))} records: "
                     f"loss {_fmt(at.get('surrogate'))} {band}, "
                     f"{crit.get('metric')} {_fmt(at.get('metric'))}, passes={at.get('passes')}; "
                     f"{p.get('reason')}")
    if r.get("error"):
        lines.append("error        " + r["error"].strip().splitlines()[-1])
    return "\n".join(lines)


def _series_name(key: tuple) -> str:
    name = key[0] or "?"
    return name + (f" [{key[5]}]" if key[5] else "")


def group_series(records: list[dict]) -> dict:
    groups = {}
    for r in records:
        groups.setdefault(series_key(r), []).append(r)
    return groups


def report_table(records: list[dict]) -> str:
    """Markdown: one row per series, one column per rung (latest run): verdict and metric."""
    lines = []
    for key, recs in group_series(records).items():
        names = []
        for r in recs:
            for n in r.get("ladder") or [r.get("rung")]:
                if n not in names:
                    names.append(n)
        latest = {}
        for r in recs:
            latest[r.get("rung")] = r
        crit = recs[-1]["criterion"]
        lines.append(f"### {_series_name(key)}: {crit['split']} {crit['metric']} "
                     f"{crit['comparator']} {crit['threshold']}")
        lines.append("| " + " | ".join(names) + " |")
        lines.append("|" + "---|" * len(names))
        cells = []
        for n in names:
            r = latest.get(n)
            cells.append("not run" if r is None else
                         f"{r.get('verdict')} {_fmt(r.get('metric_value'))}")
        lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def predictions_table(records: list[dict]) -> str:
    """Predicted (stored before the run) vs actual, for every record that has a prediction."""
    rows = [r for r in records if r.get("prediction")]
    if not rows:
        return ""
    lines = ["| record | rung | predicted loss [80%] | actual loss | predicted metric | actual metric "
             "| predicted crossing FLOPs | run FLOPs | predicted pass | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = r["prediction"]
        at = p.get("at") or {}
        band = at.get("surrogate_interval")
        band = f" [{_fmt(band[0])}, {_fmt(band[1])}]" if band else ""
        lines.append(f"| {r['id']} | {r.get('rung')} | {_fmt(at.get('surrogate'))}{band} | "
                     f"{_fmt(r.get('surrogate_value'))} | {_fmt(at.get('metric'))} | "
                     f"{_fmt(r.get('metric_value'))} | {_fmt(p.get('compute_at_threshold'), '.3g')} | "
                     f"{_fmt(r.get('train_flops'), '.3g')} | {at.get('passes')} | {r.get('verdict')} |")
    return "\n".join(lines)


def plot_series(key: tuple, recs: list[dict], path: str) -> dict | None:
    """PNG: the criterion metric (left) and the surrogate loss (right) against training compute:
    every rung's eval curve, the fitted law along each run and extrapolated along the ladder
    with its 80% band, the loss the criterion needs, the predicted crossing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = series_points(recs)
    if not points:
        return None
    crit = points[-1]["criterion"]
    trend = trend_of(points)
    fig, (ax_m, ax_l) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax_m.axhline(crit["threshold"], color="C3", ls="--", label=f"threshold {crit['comparator']} "
                 f"{crit['threshold']}")
    law = (trend or {}).get("law")
    law = forecast.law_mod.Law(**law) if law else None
    for i, p in enumerate(points):
        run = forecast.run_of(p)
        color = f"C{i % 10}"
        if run is None or not _finite(run.compute):
            ax_m.plot([p["train_flops"]], [p["metric_value"]], "o", color=color, label=p["rung"])
            ax_l.plot([p["train_flops"]], [p["surrogate_value"]], "o", color=color, label=p["rung"])
            continue
        c = run.compute * run.d / run.d_final
        ax_m.plot(c, run.metric, ".-", color=color, alpha=0.6, label=p["rung"])
        tag = " (excluded)" if run.excluded else ""
        ax_l.plot(c[run.usable], run.loss[run.usable], "o", color=color, ms=4, label=p["rung"] + tag)
        ax_l.plot(c[~run.usable], run.loss[~run.usable], "o", mfc="none", color=color, ms=4)
        if law is not None and not run.excluded and run.usable.any():  # over the fitted evals
            u = run.usable
            ax_l.plot(c[u], law(np.full(run.d[u].shape, run.n), run.d[u]), "-", color=color, alpha=0.5)
        pred = (p.get("prediction") or {}).get("at")
        if pred and _finite(pred.get("surrogate")):
            band = pred.get("surrogate_interval") or [pred["surrogate"]] * 2
            ax_l.errorbar([p["train_flops"]], [pred["surrogate"]],
                          yerr=[[pred["surrogate"] - band[0]], [band[1] - pred["surrogate"]]],
                          fmt="x", color="k", capsize=3, label="predicted before the run")
    _baseline_lines(ax_m, ax_l, recs, crit["metric"])
    text = "no trend (too few rungs or eval points)"
    if trend is not None:
        curve = trend.get("ladder_curve")
        if curve:
            ax_l.plot(curve["compute"], curve["loss"], "k-", lw=1, label=trend.get("law_text", "law"))
            ax_l.fill_between(curve["compute"], curve["lo"], curve["hi"], color="k", alpha=0.1,
                              label="80% bootstrap (floor free or 0)")
        elif "trend" in trend:  # compute-only fit of records without N, D
            t = scaling.Trend(**trend["trend"])
            grid = np.geomspace(points[0]["train_flops"] / 2, points[-1]["train_flops"] * 10, 100)
            ax_l.plot(grid, t(grid), "k-", lw=1, label="L(C) fit")
        if trend.get("target_surrogate") is not None:
            ax_l.axhline(trend["target_surrogate"], color="C3", ls="--", label="loss the criterion needs")
        x = trend.get("compute_at_threshold")
        if trend.get("unpredictable"):
            text = "unpredictable (phase change)"
        elif x:
            for ax in (ax_m, ax_l):
                ax.axvline(x, color="C2", ls=":")
            iv = trend.get("interval")
            text = f"predicted to pass at {x:.3g} FLOPs" + (
                f" [{iv[0]:.2g}, {iv[1]:.2g}]" if iv else "")
        else:
            text = "no trend"
    losses = [p["surrogate_value"] for p in points if _finite(p.get("surrogate_value")) and p["surrogate_value"] > 0]
    if losses and max(losses) / min(losses) > 20:  # a loss that collapses (phase change): log scale
        ax_l.set_yscale("log")
    for ax, ylabel in ((ax_m, f"{crit['split']} {crit['metric']}"),
                       (ax_l, f"{crit['split']} {(trend or {}).get('surrogate', 'loss')}")):
        ax.set_xscale("log")
        ax.set_xlabel("training compute (FLOPs) at the evaluation")
        ax.set_ylabel(ylabel)
        handles, labels = ax.get_legend_handles_labels()
        uniq = dict(zip(labels, handles))
        ax.legend(uniq.values(), uniq.keys(), fontsize=6)
    fig.suptitle(f"{_series_name(key)}: {text}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return trend


def _baseline_lines(ax_m, ax_l, recs: list[dict], metric: str) -> None:
    """The newest record's baselines (best n-gram, gzip and lzma given train) as horizontal
    lines: on the metric panel in bits/byte, on the loss panel in nats/token."""
    rec = next((r for r in reversed(recs) if (r.get("baselines") or {}).get("bits_per_byte")), None)
    if rec is None:
        return
    bpb = rec["baselines"]["bits_per_byte"]
    final = rec.get("final") or {}
    per_token = (final.get("bytes") or 0) / (final.get("tokens") or 1) * math.log(2)
    names = [k for k in bpb if k.startswith("kn")] + [k for k in ("gzip", "lzma") if k in bpb]
    for i, name in enumerate(names):
        style = dict(color=f"C{4 + i}", ls="-.", lw=1, alpha=0.8)
        label = name + ("|train" if name in ("gzip", "lzma") else "")
        if metric == "bits_per_byte":
            ax_m.axhline(bpb[name], label=label, **style)
        if per_token:
            ax_l.axhline(bpb[name] * per_token, label=label, **style)


def backtests(records: list[dict], experiment: str | None = None, samples: int = 60) -> list[tuple]:
    """[(series key, rows)] for every series with enough rungs (lm.scaling.backtest)."""
    out = []
    for key, recs in group_series(records).items():
        if experiment and key[0] != experiment:
            continue
        rows = backtest_mod.backtest(series_points(recs), samples=samples)
        if rows:
            out.append((key, rows))
    return out


def format_backtests(results: list[tuple]) -> str:
    """Markdown: per series its backtest table, then the summary against the goals."""
    parts, every = [], []
    for key, rows in results:
        parts += [f"### {_series_name(key)}", "", backtest_mod.format_rows(rows, key[1]), "",
                  backtest_mod.format_summary(backtest_mod.summarize(rows)), ""]
        every += rows
    if not results:
        return "No series has three or more capable rungs with N and D: nothing to backtest.\n"
    parts += ["### All series together", "", backtest_mod.format_summary(backtest_mod.summarize(every)), ""]
    return "\n".join(parts)


def plot_backtests(results: list[tuple], path: str) -> None:
    """PNG: predicted vs actual held-out loss with 80% intervals, by extrapolation factor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_e, ax_p) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, (key, rows) in enumerate(results):
        ok = [r for r in rows if "loss_err_pct" in r and not r["unpredictable"]]  # phase changes apart
        if not ok:
            continue
        f = np.array([r["factor"] for r in ok])
        err = np.array([r["loss_err_pct"] for r in ok])
        lo = np.array([100 * (r["interval"][0] - r["actual_loss"]) / r["actual_loss"] for r in ok])
        hi = np.array([100 * (r["interval"][1] - r["actual_loss"]) / r["actual_loss"] for r in ok])
        ax_e.errorbar(f, err, yerr=[err - lo, hi - err], fmt="o", color=f"C{i}", capsize=3,
                      label=_series_name(key))
        ax_p.plot([r["actual_loss"] for r in ok], [r["pred_loss"] for r in ok], "o", color=f"C{i}",
                  label=_series_name(key))
    for y in (-3, 3):
        ax_e.axhline(y, color="C2", ls=":", lw=1)
    for y in (-8, 8):
        ax_e.axhline(y, color="C3", ls=":", lw=1)
    ax_e.axhline(0, color="k", lw=0.5)
    ax_e.set_xscale("log")
    ax_e.set_xlabel("extrapolation (held-out compute / largest fitted)")
    ax_e.set_ylabel("predicted - actual loss (%), 80% interval")
    lims = ax_p.get_xlim()
    ax_p.plot(lims, lims, "k-", lw=0.5)
    ax_p.set_xlabel("actual held-out loss")
    ax_p.set_ylabel("predicted loss")
    for ax in (ax_e, ax_p):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle("backtest: each larger rung predicted from smaller ones (goals: 3% next rung, 8% at 8x;"
                 " forecasts flagged as phase changes not shown)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def report(records: list[dict], out_dir: str, *, backtest: bool = True) -> str:
    """Write report.md and one PNG per series into out_dir; returns the markdown. The backtest
    section refits every series once per held-out rung: most of the time a report takes."""
    if not is_main_process():
        return ""
    os.makedirs(out_dir, exist_ok=True)
    parts = ["# Experiment archive report", "",
             f"{len(records)} records. Cells: verdict and criterion metric of the latest run per rung.", ""]
    parts.append(report_table(records))
    pred = predictions_table(records)
    if pred:
        parts += ["## Predicted (before the run) vs actual", "", pred, ""]
    parts += ["## Trends", ""]
    for key, recs in group_series(records).items():
        name = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in _series_name(key)).strip("_")
        png = os.path.join(out_dir, f"{name}.png")
        trend = plot_series(key, recs, png)
        if trend is None:
            status = ("no forecast yet: fewer than two capable rungs, or too few usable evaluations "
                      "for L(N, D) (a decaying-schedule rung gives only its final one)")
        else:
            status = trend["reason"]
        if os.path.exists(png):
            parts.append(f"- **{_series_name(key)}**: {status} ![]({os.path.basename(png)})")
        else:
            parts.append(f"- **{_series_name(key)}**: {status}")
    if backtest:
        results = backtests(records)
        parts += ["", "## Backtest: each larger rung predicted from the smaller ones", "",
                  "Goals: next-rung loss within 3%, 8x extrapolation within 8%, crossing compute within "
                  "x2, 80% intervals covering at least 70% of held-out truths.", "", format_backtests(results)]
        if results:
            plot_backtests(results, os.path.join(out_dir, "backtest.png"))
            parts.append("![](backtest.png)")
    else:
        parts += ["", "Backtest left out (`lm archive backtest` runs it)."]
    text = "\n".join(parts) + "\n"
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(text)
    return text
