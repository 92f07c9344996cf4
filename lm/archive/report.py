"""The archive as people read it: the list, one record, the report (tables, plots, backtest).

`report(records, out_dir)` writes report.md and one PNG per series into out_dir: the table of
verdicts per rung, predicted (before the run) vs actual, each series' trend plot, and the
backtest of the forecasts (lm.scaling.backtest).
"""

from __future__ import annotations

import math
import os

import numpy as np

from lm.archive.records import finite, group_series, series_points
from lm.archive.verdict import trend_of
from lm.files import is_main_process
from lm.scaling import backtest as backtest_mod
from lm.scaling import forecast
from lm.scaling import records as scaling_records


def fmt(x, spec=".4g"):
    return format(x, spec) if finite(x) else ("-" if x is None else str(x))


def fmt_band(value, band) -> str:
    """'2.25 [2.24, 2.33]': a predicted value and its interval (the value alone without one)."""
    return fmt(value) + (f" [{fmt(band[0])}, {fmt(band[1])}]" if band else "")


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
        crit = f"{s['metric']}={fmt(s['value'])} {s['comparator']}{fmt(s['threshold'], 'g')}"
        lines.append(f"{s['id']:<52} {s['verdict'] or '-':<12} {crit:<28} {fmt(s['loss']):>7} "
                     f"{fmt(s['train_flops'], '.2e'):>9} {fmt(s['wall_time'], '.0f'):>5}s"
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
             "final        " + ", ".join(f"{k}={fmt(v)}" for k, v in (r.get("final") or {}).items()),
             f"scale        params {r.get('num_params')}, FLOPs {fmt(r.get('train_flops'), '.3e')}, "
             f"tokens {r.get('tokens_seen')}, wall {fmt(r.get('wall_time'), '.1f')} s",
             f"fit inputs   N (non-embedding) {fmt(scaling_records.n_params(r), '.4g')}, "
             f"D {fmt(scaling_records.tokens(r), '.4g')}, schedule {scaling_records.schedule(r)}",
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
        lines.append(f"predicted    before the run, from {len(p.get('from_records', []))} records: "
                     f"loss {fmt_band(at.get('surrogate'), at.get('surrogate_interval'))}, "
                     f"{crit.get('metric')} {fmt(at.get('metric'))}, passes={at.get('passes')}; "
                     f"{p.get('reason')}")
    if r.get("error"):
        lines.append("error        " + r["error"].strip().splitlines()[-1])
    return "\n".join(lines)


def _series_name(key: tuple) -> str:
    name = key[0] or "?"
    return name + (f" [{key[5]}]" if key[5] else "")


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
                         f"{r.get('verdict')} {fmt(r.get('metric_value'))}")
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
        lines.append(f"| {r['id']} | {r.get('rung')} | {fmt_band(at.get('surrogate'), at.get('surrogate_interval'))} | "
                     f"{fmt(r.get('surrogate_value'))} | {fmt(at.get('metric'))} | "
                     f"{fmt(r.get('metric_value'))} | {fmt(p.get('compute_at_threshold'), '.3g')} | "
                     f"{fmt(r.get('train_flops'), '.3g')} | {at.get('passes')} | {r.get('verdict')} |")
    return "\n".join(lines)


def plot_series(key: tuple, recs: list[dict], path: str, *, samples: int = 100) -> dict | None:
    """PNG: the criterion metric (left) and the surrogate loss (right) against training compute:
    every rung's eval curve, the fitted law along each run and extrapolated along the ladder
    with its 80% band, the loss the criterion needs, the predicted crossing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    points = series_points(recs)
    if not points:
        return None
    crit = points[-1]["criterion"]
    trend = trend_of(points, samples=samples)
    fig, (ax_m, ax_l) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax_m.axhline(crit["threshold"], color="C3", ls="--", label=f"threshold {crit['comparator']} "
                 f"{crit['threshold']}")
    law = (trend or {}).get("law")
    law = forecast.law_mod.Law(**law) if law else None
    for i, p in enumerate(points):
        _plot_rung(ax_m, ax_l, p, law, f"C{i % 10}")
    _baseline_lines(ax_m, ax_l, recs, crit["metric"])
    text = "no trend (too few rungs or eval points)"
    if trend is not None:
        curve = trend.get("ladder_curve")
        if curve:
            ax_l.plot(curve["compute"], curve["loss"], "k-", lw=1, label=trend.get("law_text", "law"))
            ax_l.fill_between(curve["compute"], curve["lo"], curve["hi"], color="k", alpha=0.1,
                              label="80% bootstrap (floor free or 0)")
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
    losses = [p["surrogate_value"] for p in points if finite(p.get("surrogate_value")) and p["surrogate_value"] > 0]
    if losses and max(losses) / min(losses) > 20:  # a loss that collapses (phase change): log scale
        ax_l.set_yscale("log")
    for ax, ylabel in ((ax_m, f"{crit['split']} {crit['metric']}"),
                       (ax_l, f"{crit['split']} {(trend or {}).get('surrogate', 'loss')}")):
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # a span under a decade labels every minor tick
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


def _plot_rung(ax_m, ax_l, p: dict, law, color: str) -> None:
    """One rung: its eval curve (metric and loss; open circles: evals the fit leaves out),
    the law along it, and the prediction stored before it ran."""
    run = forecast.run_of(p)
    if run is None or not finite(run.compute):
        ax_m.plot([p["train_flops"]], [p["metric_value"]], "o", color=color, label=p["rung"])
        ax_l.plot([p["train_flops"]], [p["surrogate_value"]], "o", color=color, label=p["rung"])
        return
    c = run.compute * run.d / run.d_final
    ax_m.plot(c, run.metric, ".-", color=color, alpha=0.6, label=p["rung"])
    tag = " (excluded)" if run.excluded else ""
    u = run.in_fit  # the evals the law was fitted on (filled), the others hollow
    ax_l.plot(c[u], run.loss[u], "o", color=color, ms=4, label=p["rung"] + tag)
    ax_l.plot(c[~u], run.loss[~u], "o", mfc="none", color=color, ms=4)
    if law is not None and not run.excluded and u.any():  # at each eval's forward and annealing areas
        ax_l.plot(c[u], law(np.full(run.d[u].shape, run.n), run.s1[u], run.s2[u]), "-", color=color, alpha=0.5)
    pred = (p.get("prediction") or {}).get("at")
    if pred and finite(pred.get("surrogate")):
        band = pred.get("surrogate_interval") or [pred["surrogate"]] * 2
        ax_l.errorbar([p["train_flops"]], [pred["surrogate"]],
                      yerr=[[pred["surrogate"] - band[0]], [band[1] - pred["surrogate"]]],
                      fmt="x", color="k", capsize=3, label="predicted before the run")


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
    collapsing = [rows for _, rows in results if backtest_mod.collapses(rows)]
    if collapsing and len(collapsing) < len(results):  # the two kinds apart, so neither hides the other
        smooth = [r for _, rows in results if not backtest_mod.collapses(rows) for r in rows]
        parts += [f"### Series whose loss stays within {backtest_mod.COLLAPSE:g}x across rungs", "",
                  backtest_mod.format_summary(backtest_mod.summarize(smooth)), "",
                  f"### Series whose loss collapses (falls more than {backtest_mod.COLLAPSE:g}x: a task "
                  "being learned; a % error on a loss near 0 is unbounded)", "",
                  backtest_mod.format_summary(backtest_mod.summarize([r for rows in collapsing for r in rows])), ""]
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


def report(records: list[dict], out_dir: str, *, backtest: bool = True, samples: int = 100) -> str:
    """Write report.md and one PNG per series into out_dir; returns the markdown. The backtest
    section refits every series once per held-out rung: most of the time a report takes.
    `samples`: bootstrap refits per series trend (its 80% band)."""
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
        trend = plot_series(key, recs, png, samples=samples)
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
