"""`lm archive list|show|rerun|report|backtest|replay`: the archive of experiment run records.

    lm archive list [--status=not_yet] [--experiment=NAME] [--json]
    lm archive show ID [--json]
    lm archive rerun (ID | --status=not_yet) --rung=next|NAME [--seeds=K] [--set key=value ...]
    lm archive report [--out=DIR]        (default: the archive's own report/ folder)
    lm archive backtest [EXPERIMENT]
    lm archive replay [EXPERIMENT] [--json]

rerun stores, before training, what the archive's trend predicts for the new rung; the new
record names the old one as its parent. With --status, each series (experiment + variant) is
rerun once, from its largest-compute record if that record has the status; --status=not_yet
also takes a first miss recorded as inconclusive by earlier versions (a series with one rung:
today a first miss is not_yet, "no trend yet"). --seeds=K reruns at K seeds (default: as many
as the record had). A series that cannot
be rerun is reported and skipped; the others still run (exit status 1 if any failed).
backtest holds out each larger rung of every series (or of EXPERIMENT), predicts it from the
smaller ones and prints the errors, interval coverage and crossing factors (lm/scaling).
replay re-decides every rung of every series (or of EXPERIMENT) in the order it was run,
seeing only the records written before it, and prints what a user would have been told
(forecast, cheapest rung to pass, verdict) beside what happened (lm/archive/replay.py).
"""

import json
import os
import sys
import warnings

from absl import flags

from lm import archive, experiment
from lm.archive import replay as replay_mod
from lm.cli._errors import EXPECTED, describe

flags.DEFINE_string("archive", archive.DEFAULT_ARCHIVE, "Directory of run records.")
flags.DEFINE_string("status", None, f"Only records with this verdict: one of {archive.VERDICTS}.")
flags.DEFINE_string("experiment", None, "Only records of this experiment name.")
flags.DEFINE_bool("json", False, "Machine-readable output.")
flags.DEFINE_string("rung", "next", "rerun: 'next' or a rung name.")
flags.DEFINE_multi_string("set", [], "rerun: extra config override key=value; repeatable.")
flags.DEFINE_string("out", None, "report: output directory (default: the archive's report/).")
flags.DEFINE_integer("seeds", None, "rerun: train each rung at this many seeds (default: as many as "
                     "the record had).")
flags.DEFINE_integer("samples", 40, "replay: bootstrap refits per forecast.")
flags.DEFINE_bool("backtest", True, "report: include the backtest section (each larger rung "
                  "predicted from the smaller ones; the slow part of a report).")
flags.DEFINE_bool("progress", True, "rerun: show the trainer's progress.")
FLAGS = flags.FLAGS

USAGE = __doc__


SUBCOMMANDS = ("list", "show", "rerun", "report", "backtest", "replay")
# What `report` reads from each record; one without them is skipped with a warning.
REPORT_FIELDS = ("experiment", "rung", "verdict", "criterion")


def _select(records, by_status: bool = True):
    if FLAGS.status and FLAGS.status not in archive.VERDICTS:
        raise ValueError(f"--status={FLAGS.status!r} is not one of {archive.VERDICTS}")
    out = records
    if FLAGS.status and by_status:
        out = [r for r in out if r.get("verdict") == FLAGS.status]
    if FLAGS.experiment:
        out = [r for r in out if r.get("experiment") == FLAGS.experiment]
    return out


def rerun_targets(records, status):
    """Per series, its largest-compute usable record, if that record's verdict is `status`
    (for not_yet, also a first miss that an earlier version recorded as inconclusive)."""
    targets = []
    for recs in archive.group_series(records).values():
        pts = archive.series_points(recs)
        if not pts:
            continue
        top = pts[-1].get("verdict")
        first_miss = (status == "not_yet" and top == "inconclusive"
                      and len({p["train_flops"] for p in pts}) == 1)
        if top == status or first_miss:
            targets.append(pts[-1])
    return targets


def _reportable(records):
    """Records with the fields the report reads; the others are skipped with a warning."""
    out = []
    for r in records:
        crit = r.get("criterion")
        missing = [k for k in REPORT_FIELDS if r.get(k) is None]
        if isinstance(crit, dict):
            missing += [f"criterion.{k}" for k in ("metric", "comparator", "threshold", "split")
                        if crit.get(k) is None]
        elif "criterion" not in missing:
            missing.append("criterion")
        if missing:
            warnings.warn(f"skipping {r.get('_path', r['id'])}: the record has no {', '.join(missing)}")
        else:
            out.append(r)
    return out


def _rerun_all(targets) -> int:
    """Rerun each target; one that cannot run is reported and skipped. Returns the exit status."""
    failed = 0
    for parent in targets:
        print(f"rerunning {parent['id']} at rung {FLAGS.rung}", file=sys.stderr)
        try:
            record, out = experiment.rerun(parent, FLAGS.rung, sets=FLAGS.set, archive_dir=FLAGS.archive,
                                           progress=FLAGS.progress, seeds=FLAGS.seeds)
        except EXPECTED as e:
            if len(targets) == 1:
                raise
            print(f"lm archive: error: cannot rerun {parent['id']}: {describe(e)}; skipped",
                  file=sys.stderr)
            failed += 1
            continue
        print(f"{record['verdict']}: {record['reason']}", file=sys.stderr)
        print(out)
        failed += record["verdict"] == "broken"
    return 1 if failed else 0


def main(argv):
    if len(argv) < 2:
        raise SystemExit(USAGE)
    if argv[1] not in SUBCOMMANDS:
        raise ValueError(f"unknown subcommand {argv[1]!r}; use one of {', '.join(SUBCOMMANDS)}")
    cmd, args = argv[1], argv[2:]
    if FLAGS.seeds is not None and FLAGS.seeds < 1:
        raise ValueError(f"--seeds={FLAGS.seeds}: give at least one seed")
    if not os.path.isdir(FLAGS.archive):
        raise FileNotFoundError(f"--archive={FLAGS.archive}: no such directory (an archive is "
                                "where `lm run` writes its records; check the path)")
    records = archive.load_records(FLAGS.archive)
    if cmd == "list":
        sel = _select(records)
        if FLAGS.json:
            print(json.dumps([archive.summary_row(r) for r in sel], indent=1))
        else:
            print(archive.format_list(sel))
    elif cmd == "show":
        if len(args) != 1:
            raise ValueError("usage: lm archive show ID (an id or a unique part of one)")
        rec = archive.find_record(records, args[0])
        print(experiment.record_json(rec) if FLAGS.json else archive.format_show(rec))
    elif cmd == "rerun":
        if args and FLAGS.status:
            raise ValueError("rerun: give an ID or --status, not both")
        if args:
            targets = [archive.find_record(records, a) for a in args]
        elif FLAGS.status:
            # per series, by the verdict of its largest run (so not the other records' filter)
            targets = rerun_targets(_select(records, by_status=False), FLAGS.status)
        else:
            raise ValueError("usage: lm archive rerun (ID | --status=not_yet) --rung=next|NAME")
        if not targets:
            print("nothing to rerun", file=sys.stderr)
        return _rerun_all(targets)
    elif cmd == "backtest":
        if len(args) > 1:
            raise ValueError("usage: lm archive backtest [EXPERIMENT]")
        name = args[0] if args else FLAGS.experiment
        if name and not any(r.get("experiment") == name for r in records):
            raise ValueError(f"backtest: no records of experiment {name!r} in {FLAGS.archive}")
        print(archive.format_backtests(archive.backtests(records, name)))
    elif cmd == "replay":
        _replay(records, args)
    else:
        out = FLAGS.out or os.path.join(FLAGS.archive, "report")  # never the checkout's report
        text = archive.report(_reportable(records), out, backtest=FLAGS.backtest)
        print(text)
        print(f"wrote {out}/report.md", file=sys.stderr)
    return 0


def _replay(records, args) -> None:
    if len(args) > 1:
        raise ValueError("usage: lm archive replay [EXPERIMENT]")
    name = args[0] if args else FLAGS.experiment
    if name and not any(r.get("experiment") == name for r in records):
        raise ValueError(f"replay: no records of experiment {name!r} in {FLAGS.archive}")
    results = replay_mod.replay(_reportable(records), name, samples=FLAGS.samples)
    if FLAGS.json:
        print(json.dumps([dict(series=list(key), rows=rows) for key, rows in results], indent=1,
                         default=str))
    else:
        print(replay_mod.format_replay(results))
