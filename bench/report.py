"""Markdown tables of the latest results in bench/results/*.jsonl (for bench/README.md).

    python -m bench.report [--results_dir=bench/results]
"""

from __future__ import annotations

import glob
import json
import os

from absl import app, flags


def define_flags():
    flags.DEFINE_string("results_dir", "bench/results", "Directory of <device>.jsonl files.")


def load(results_dir: str) -> dict[str, list[dict]]:
    """{device label: [records, oldest first]}; unreadable lines are reported and skipped."""
    out = {}
    for path in sorted(glob.glob(os.path.join(results_dir, "*.jsonl"))):
        recs = []
        with open(path) as f:
            for i, line in enumerate(f, 1):
                try:
                    recs.append(json.loads(line))
                except json.JSONDecodeError:
                    print(f"skipping {path}:{i}: not a JSON line")
        out[os.path.splitext(os.path.basename(path))[0]] = recs
    return out


def _latest(recs, benchmark, key):
    latest = {}
    for r in recs:
        if r.get("benchmark") == benchmark:
            latest[key(r)] = r
    return list(latest.values())


def throughput_table(recs) -> str:
    rows = ["| config | dtype | ms/step median (p10-p90) | tokens/s | MFU | compile s | peak mem | load | note |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in _latest(recs, "throughput", lambda r: (r["config"]["name"], r["config"]["rung"],
                                                     r["config"]["hash"], r.get("note", ""))):
        c, x = r["config"], r["results"]
        mem = max(x["peak_memory_bytes_per_device"]) / 2**20
        rows.append(f"| {c['name']}:{c['rung']} | {c['model']['dtype']} | {x['step_ms_median']:.1f} "
                    f"({x['step_ms_p10']:.1f}-{x['step_ms_p90']:.1f}) | {x['tokens_per_s']:.0f} | "
                    f"{100 * (x['mfu'] or 0):.1f}% | {x['compile_s']:.1f} | {mem:.0f} MiB | "
                    f"{r['machine']['load_avg_1m']} | {r.get('note', '')} |")
    return "\n".join(rows)


def compare_table(recs) -> str:
    rows = ["| config | ours ms/step | nanoGPT ms/step | ours/nanoGPT speed | load | note |",
            "|---|---|---|---|---|---|"]
    for r in _latest(recs, "nanogpt_compare", lambda r: (r["config"]["rung"], r.get("note", ""))):
        x = r["results"]
        rows.append(f"| {r['config']['name']}:{r['config']['rung']} | {x['ours']['step_ms_median']:.1f} | "
                    f"{x['nanogpt']['step_ms_median']:.1f} | {x['speed_ratio_median']:.2f}x | "
                    f"{r['machine']['load_avg_1m']} | {r.get('note', '')} |")
    return "\n".join(rows)


def compile_table(recs) -> str:
    pts = {}
    for r in recs:
        if r.get("benchmark") == "compile_time":
            x = r["results"]
            pts[(x["num_layers"], x["scan_layers"])] = x["total_s"]
    depths = sorted({d for d, _ in pts})
    rows = ["| layers | " + " | ".join(str(d) for d in depths) + " |",
            "|---|" + "---|" * len(depths)]
    for scan, name in ((False, "unrolled (s)"), (True, "nn.scan (s)")):
        rows.append(f"| {name} | " + " | ".join(
            f"{pts[(d, scan)]:.1f}" if (d, scan) in pts else "" for d in depths) + " |")
    return "\n".join(rows)


def memory_table(recs) -> str:
    rows = ["| config | fsdp | params+opt total | fullest device | ratio to total/fsdp |",
            "|---|---|---|---|---|"]
    for r in _latest(recs, "fsdp_memory", lambda r: (r["config"]["hash"], r["results"]["fsdp"])):
        x = r["results"]
        rows.append(f"| {r['config']['name']}:{r['config']['rung']} | {x['fsdp']} | "
                    f"{x['state_bytes_total'] / 2**20:.1f} MiB | "
                    f"{x['state_bytes_per_device_max'] / 2**20:.2f} MiB | {x['ratio_to_ideal']:.3f} |")
    return "\n".join(rows)


def report(results_dir: str) -> str:
    parts = []
    for device, recs in load(results_dir).items():
        parts.append(f"### {device}\n")
        for title, fn in (("Throughput", throughput_table), ("Against nanoGPT", compare_table),
                          ("Compile time against depth", compile_table),
                          ("FSDP memory per device", memory_table)):
            table = fn(recs)
            if table.count("\n") > 1:
                parts.append(f"**{title}**\n\n{table}\n")
    return "\n".join(parts)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    print(report(flags.FLAGS.results_dir))


if __name__ == "__main__":
    define_flags()
    app.run(main)
