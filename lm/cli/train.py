"""`lm train --config=experiments/FILE.py[:RUNG] --workdir=DIR [--config.train.steps=100 ...]`

Trains the config's model, writing config.json, metrics.jsonl, TensorBoard events and Orbax
checkpoints into the workdir; rerunning the same command resumes from the newest checkpoint.
Ends with a summary line and a short sample. Multi-host: under SLURM / a TPU pod the
processes find each other by themselves; elsewhere pass --coordinator_address,
--num_processes and --process_id (or the JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
JAX_PROCESS_ID environment variables) to every process.
"""

import os
import re
import sys

from absl import flags
from ml_collections import config_flags


def _fail(message: str) -> None:
    sys.exit(f"lm train: error: {message}")


def _one_line_flag_errors(holder) -> None:
    """Config flag errors as `lm train: error: ...` lines instead of tracebacks.

    config_flags raises AttributeError for an unknown --config.KEY (absl then shows a
    traceback) and absl reports a bad value in two lines; both exit through _fail here.
    """
    config_flag = flags.FLAGS[holder.name]
    parse_config = config_flag._parse

    def parse_field(flag, value):
        try:
            type(flag).parse(flag, value)
        except flags.Error as e:
            reason = str(e).partition(f"={value}: ")[2] or str(e)
            _fail(f"--{flag.name}={value}: {reason}")

    def parse(argument):
        try:
            config = parse_config(argument)
        except (AttributeError, KeyError) as e:
            text = str(e).replace("\\", "")
            key = re.search(r"'([^'\"]+)", text)
            key = key.group(1) if key else text
            hint = re.search(r'Did you mean "([^"]+)"', text)
            given = [a[2:].split("=")[0] for a in sys.argv if a.startswith(f"--{holder.name}.")]
            path = next((g for g in given if key in g.split(".")), key)
            _fail(f"unknown config key {path!r}" + (f" (did you mean {hint.group(1)!r}?)" if hint else ""))
        for name in list(flags.FLAGS):
            if name.startswith(holder.name + "."):
                field = flags.FLAGS[name]
                field.parse = lambda value, f=field: parse_field(f, value)
        return config

    config_flag._parse = parse


_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment file, `path.py` or `path.py:RUNG` (get_config(RUNG)).")
_one_line_flag_errors(_CONFIG)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for config, metrics and checkpoints.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for a multi-process run.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (0-based).")


def main(argv):
    if len(argv) > 1:
        _fail(f"unexpected arguments {argv[1:]}")
    if _CONFIG.value is None:
        _fail("--config=experiments/FILE.py[:RUNG] is required")
    if not _WORKDIR.value:
        _fail("--workdir is required")
    if os.path.exists(_WORKDIR.value) and not os.path.isdir(_WORKDIR.value):
        _fail(f"--workdir={_WORKDIR.value} is a file, not a directory")
    from lm import sharding

    try:
        sharding.maybe_initialize_distributed(
            _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
        from lm import trainer

        config = _CONFIG.value
        from lm.experiment import apply_flag_rung

        flag = flags.FLAGS["config"]
        apply_flag_rung(config, config_flags.get_config_filename(flag),
                        config_flags.get_override_values(flag))
        summary = trainer.train(config, _WORKDIR.value, progress=_PROGRESS.value)
    except (ValueError, FileNotFoundError, NotADirectoryError) as e:  # ConfigError is a ValueError
        if os.environ.get("LM_DEBUG"):
            raise
        text = str(e).strip().splitlines()
        _fail(text[0] if text else type(e).__name__)
    import jax

    if jax.process_index() == 0:
        print(trainer.summary_line(summary))
        if summary["sample"]:
            print("--- sample ---")
            print(summary["sample"])
