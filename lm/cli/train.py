"""`lm train --config=experiments/FILE.py[:RUNG] --workdir=DIR [--config.train.steps=100 ...]`

Trains the config's model, writing config.json, metrics.jsonl, TensorBoard events and Orbax
checkpoints into the workdir; rerunning the same command resumes from the newest checkpoint.
Ends with a summary line and a short sample. Multi-host: under SLURM / a TPU pod the
processes find each other by themselves; elsewhere pass --coordinator_address,
--num_processes and --process_id (or the JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
JAX_PROCESS_ID environment variables) to every process.
"""

import os
import sys

from absl import flags
from ml_collections import config_flags

from lm.cli import _config_flag


def _fail(message: str) -> None:
    sys.exit(f"lm train: error: {message}")


_CONFIG = _config_flag.one_line_errors(config_flags.DEFINE_config_file(
    "config", None, "Experiment file, `path.py` or `path.py:RUNG` (get_config(RUNG))."), "train")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for config, metrics and checkpoints.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")


def main(argv):
    if len(argv) > 1:
        _fail(f"unexpected arguments {argv[1:]}")
    if not _WORKDIR.value:
        _fail("--workdir is required")
    if os.path.exists(_WORKDIR.value) and not os.path.isdir(_WORKDIR.value):
        _fail(f"--workdir={_WORKDIR.value} is a file, not a directory")
    from lm import trainer  # jax.distributed: started by the dispatcher (lm/cli/_multihost.py)
    from lm.experiment import resolve_init_from

    config, _ = _config_flag.load(_CONFIG)
    resolve_init_from(config, progress=_PROGRESS.value)  # experiment:FILE.py:RUNG -> its workdir
    summary = trainer.train(config, _WORKDIR.value, progress=_PROGRESS.value)
    import jax

    if jax.process_index() == 0:
        print(trainer.summary_line(summary))
        if summary["baselines"] is not None:  # computed once, at the end of trainer.train
            from lm import baselines

            print(baselines.beside_line(summary["final"]["bits_per_byte"], summary["baselines"]))
        if summary["sample"]:
            print("--- sample ---")
            print(summary["sample"])
