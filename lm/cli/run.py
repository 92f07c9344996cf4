"""`lm run experiments/X.py --rung=NAME [--seeds=K] [--archive=DIR] [--workdir=DIR] [--set key=value ...]`

Trains one rung of an experiment file, decides its verdict (passed, not_yet, failed, inverse,
inconclusive; broken if the run crashed) against the archived runs of the same experiment,
writes one record into the archive and prints its path. `experiments/X.py:NAME` is the same
as `--rung=NAME`. `--seeds=K` trains the rung at seeds seed, seed + 1, ..., seed + K - 1 (each in
its own workdir, `seed<N>/` under --workdir) and writes one record: the mean metric, with the
spread in its `seeds` field. Exit status: 0 for any verdict but broken, 1 for broken.
"""

import sys

from absl import flags

from lm import archive, experiment

flags.DEFINE_string("rung", None, "Rung of the experiment's ladder (default: its first rung).")
flags.DEFINE_string("archive", archive.DEFAULT_ARCHIVE, "Directory of run records.")
flags.DEFINE_string("workdir", None, "Training workdir to keep (default: a temporary one, removed).")
flags.DEFINE_multi_string("set", [], "Config override key=value (e.g. model.d_model=256); repeatable.")
flags.DEFINE_bool("progress", True, "Show the trainer's progress.")
flags.DEFINE_integer("seeds", 1, "Train the rung at this many seeds (config.seed, +1, ...); one record, "
                     "the mean metric and the spread.")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) != 2:
        raise SystemExit("usage: lm run experiments/X.py[:RUNG] [--rung=NAME] [--archive=DIR] "
                         "[--workdir=DIR] [--seeds=K] [--set key=value ...]")
    path, _, rung = argv[1].partition(":")
    if rung and FLAGS.rung and rung != FLAGS.rung:
        raise ValueError(f"rung given twice ({rung!r} and --rung={FLAGS.rung!r}); give one")
    record, out = experiment.run(path, FLAGS.rung or rung or None, sets=FLAGS.set,
                                 archive_dir=FLAGS.archive, workdir=FLAGS.workdir,
                                 progress=FLAGS.progress, seeds=FLAGS.seeds)
    print(f"{record['verdict']}: {record['reason']}", file=sys.stderr)
    bpb = (record.get("final") or {}).get("bits_per_byte")
    if record.get("baselines") and bpb is not None:
        from lm.baselines import beside_line

        print(beside_line(bpb, record["baselines"]), file=sys.stderr)
    print(out)
    return 1 if record["verdict"] == "broken" else 0
