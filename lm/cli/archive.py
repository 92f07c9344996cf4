"""`lm archive list|show|rerun|report`: the archive of experiment run records.

    lm archive list [--status=not_yet] [--experiment=NAME] [--json]
    lm archive show ID [--json]
    lm archive rerun (ID | --status=not_yet) --rung=next|NAME [--set key=value ...]
    lm archive report [--out=DIR]
    lm archive backtest [EXPERIMENT]

rerun stores, before training, what the archive's trend predicts for the new rung; the new
record names the old one as its parent. With --status, each series (experiment + variant) is
rerun once, from its largest-compute record if that record has the status.
backtest holds out each larger rung of every series (or of EXPERIMENT), predicts it from the
smaller ones and prints the errors, interval coverage and crossing factors (lm/scaling).
"""

import json
import sys

from absl import flags

from lm import archive, experiment

flags.DEFINE_string("archive", archive.DEFAULT_ARCHIVE, "Directory of run records.")
flags.DEFINE_string("status", None, f"Only records with this verdict: one of {archive.VERDICTS}.")
flags.DEFINE_string("experiment", None, "Only records of this experiment name.")
flags.DEFINE_bool("json", False, "Machine-readable output.")
flags.DEFINE_string("rung", "next", "rerun: 'next' or a rung name.")
flags.DEFINE_multi_string("set", [], "rerun: extra config override key=value; repeatable.")
flags.DEFINE_string("out", "experiments/archive/report", "report: output directory.")
flags.DEFINE_bool("progress", True, "rerun: show the trainer's progress.")
FLAGS = flags.FLAGS

USAGE = __doc__


def _select(records):
    if FLAGS.status and FLAGS.status not in archive.VERDICTS:
        raise SystemExit(f"--status={FLAGS.status!r} is not one of {archive.VERDICTS}")
    out = records
    if FLAGS.status:
        out = [r for r in out if r.get("verdict") == FLAGS.status]
    if FLAGS.experiment:
        out = [r for r in out if r.get("experiment") == FLAGS.experiment]
    return out


def rerun_targets(records, status):
    """Per series, its largest-compute usable record, if that record's verdict is `status`."""
    targets = []
    for recs in archive.group_series(records).values():
        pts = archive.series_points(recs)
        if pts and pts[-1].get("verdict") == status:
            targets.append(pts[-1])
    return targets


def main(argv):
    if len(argv) < 2 or argv[1] not in ("list", "show", "rerun", "report", "backtest"):
        raise SystemExit(USAGE)
    cmd, args = argv[1], argv[2:]
    records = archive.load_records(FLAGS.archive)
    if cmd == "list":
        sel = _select(records)
        if FLAGS.json:
            print(json.dumps([archive.summary_row(r) for r in sel], indent=1))
        else:
            print(archive.format_list(sel))
    elif cmd == "show":
        if len(args) != 1:
            raise SystemExit("usage: lm archive show ID")
        rec = archive.find_record(records, args[0])
        print(experiment.record_json(rec) if FLAGS.json else archive.format_show(rec))
    elif cmd == "rerun":
        if args and FLAGS.status:
            raise SystemExit("lm archive rerun: give an ID or --status, not both")
        if args:
            targets = [archive.find_record(records, a) for a in args]
        elif FLAGS.status:
            targets = rerun_targets(_select(records), FLAGS.status)
        else:
            raise SystemExit("usage: lm archive rerun (ID | --status=not_yet) --rung=next|NAME")
        if not targets:
            print("nothing to rerun", file=sys.stderr)
        failed = 0
        for parent in targets:
            print(f"rerunning {parent['id']} at rung {FLAGS.rung}", file=sys.stderr)
            record, out = experiment.rerun(parent, FLAGS.rung, sets=FLAGS.set,
                                           archive_dir=FLAGS.archive, progress=FLAGS.progress)
            print(f"{record['verdict']}: {record['reason']}", file=sys.stderr)
            print(out)
            failed += record["verdict"] == "broken"
        return 1 if failed else 0
    elif cmd == "backtest":
        if len(args) > 1:
            raise SystemExit("usage: lm archive backtest [EXPERIMENT]")
        name = args[0] if args else FLAGS.experiment
        if name and not any(r.get("experiment") == name for r in records):
            raise SystemExit(f"lm archive backtest: no records of experiment {name!r} in {FLAGS.archive}")
        print(archive.format_backtests(archive.backtests(records, name)))
    else:
        text = archive.report(records, FLAGS.out)
        print(text)
        print(f"wrote {FLAGS.out}/report.md", file=sys.stderr)
    return 0
