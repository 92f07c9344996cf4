"""Experiments as files: spec -> run -> record -> verdict, and reruns at a larger scale.

An experiment file defines `get_config(arg)` returning `lm.config.base_config()` with its
model/data/train overrides and an `experiment` block: name, hypothesis, the success criterion
(metric comparator threshold on split) and a ladder of rungs ordered by scale, each a set of
dotted-key overrides. `arg` names the rung; files end with `return apply_rung(config, arg)`.

    config.experiment.ladder = ladder(tiny={"model.d_model": 32, "train.steps": 200},
                                      small={"model.d_model": 64, "train.steps": 400})

`run(path, rung, seeds=K)` trains the rung through `lm.trainer.train` at K seeds (seed, seed + 1,
...), reads the criterion's metric (the mean over seeds; the spread in `record["seeds"]`),
decides the verdict against the archive (rules in lm/archive/verdict.py) and writes one record,
completed in one place (`_finish`). A crash or an interrupt inside training writes a "broken"
record; a killed process writes nothing (records are written atomically at the end). A bad
config is an error, not a record. A diverged run (the NaN guard stopped it) is "failed". A
failure after the final checkpoint (the trainer's end-of-run work) is never "broken": the
workdir is kept and the error says where. The temporary workdir is removed only once the
record is written; if the archive cannot take it (read-only, full), the record is saved into
the kept workdir and the error says where.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import importlib.util
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from importlib import metadata

import ml_collections
import numpy as np

from lm import archive
from lm import objectives
from lm import trackers
from lm.evals import criteria
from lm.scaling import forecast
from lm.scaling import records as scaling_records
from lm.config import ConfigError, config_hash, set_dotted
from lm.errors import LmError

METRICS = ("excess_bits_per_byte",) + objectives.metric_names()  # what a criterion may name
SPLITS = ("valid",)  # the trainer's summary evaluates on valid


# ---------------------------------------------------------------------------------------------
# The ladder.

def ladder(**rungs: dict) -> tuple:
    """ladder(tiny={'model.d_model': 32}, ...) -> the ordered tuple form config.py stores."""
    return tuple((name, tuple((str(k), v) for k, v in overrides.items()))
                 for name, overrides in rungs.items())


def rungs(config) -> list[str]:
    return [name for name, _ in config.experiment.ladder]


def rung_overrides(config, rung: str) -> dict:
    for name, pairs in config.experiment.ladder:
        if name == rung:
            return dict((k, v) for k, v in pairs)
    names = rungs(config)
    where = f" of experiment {config.experiment.name!r}" if config.experiment.name else ""
    raise ConfigError(f"unknown rung {rung!r}{where}; rungs (smallest first): {names or 'none defined'}")


def next_rung(config, rung: str) -> str:
    names = rungs(config)
    rung_overrides(config, rung)  # error if unknown
    i = names.index(rung)
    if i + 1 >= len(names):
        raise ConfigError(f"rung {rung!r} is the top of the ladder {names}; rerun with "
                          "--rung=NAME or --set overrides (e.g. a bigger model.d_model)")
    return names[i + 1]


def apply_rung(config, rung: str | None):
    """Apply a rung's overrides in place (None/'' = the default or first rung); returns config."""
    names = rungs(config)
    rung = rung or config.experiment.rung or (names[0] if names else "")
    if not rung:
        return config
    for key, value in rung_overrides(config, rung).items():
        set_dotted(config, key, value)
    config.experiment.rung = rung
    return config


def apply_flag_rung(config, config_arg: str, overrides: dict) -> None:
    """`--config=file.py:RUNG` when the file's get_config left the rung to the caller: apply
    the rung's ladder overrides, then the command line's --config.* `overrides` on top again."""
    rung = config_arg.partition(":")[2]
    ladder = dict(config.experiment.get("ladder", ()) or ())
    if not rung or rung not in ladder or config.experiment.rung == rung:
        return
    for key, value in dict(ladder[rung]).items():
        set_dotted(config, key, value)
    for key, value in overrides.items():
        set_dotted(config, key, value)
    config.experiment.rung = rung


def parse_value(config, key: str, text):
    """A --set value coerced to the type of the existing key (bool/int/float/str)."""
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
        node = node[p] if p in node else None
        if node is None:
            break
    old = node[leaf] if node is not None and leaf in node else None
    if not isinstance(text, str):
        return text
    try:
        if isinstance(old, bool):
            if text.lower() in ("1", "true", "yes"):
                return True
            if text.lower() in ("0", "false", "no"):
                return False
            raise ValueError
        if isinstance(old, int):
            return int(text)
        if isinstance(old, float):
            return float(text)
        if isinstance(old, str):
            return text
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if old is None or isinstance(old, (tuple, list)):
            return text
        raise ConfigError(f"--set {key}={text}: cannot read {text!r} as {type(old).__name__}")


def parse_sets(sets) -> list[tuple[str, str]]:
    out = []
    for item in sets or ():
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        out.append((key.strip(), value))
    return out


# ---------------------------------------------------------------------------------------------
# Loading an experiment file.

INIT_FROM_EXPERIMENT = "experiment:"


def load_module(path: str):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"experiment file {path!r} does not exist")
    name = "lm_experiment_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except (SyntaxError, ConfigError):
        raise
    except Exception as e:  # the file is the user's code: name it and what it raised
        raise ConfigError(f"{path}: importing it raised {type(e).__name__}: {e}") from e
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{path}: an experiment file must define get_config(arg)")
    return module


def load_config(path: str, rung: str | None = None, sets=()) -> ml_collections.ConfigDict:
    """get_config(rung) of the file, the rung applied, then --set overrides; validated."""
    module = load_module(path)
    try:
        config = module.get_config(rung) if rung else module.get_config(None)
    except ConfigError:
        raise
    except Exception as e:  # the file is the user's code: name it and what it raised
        raise ConfigError(f"{path}: get_config({rung!r}) raised {type(e).__name__}: {e}") from e
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"{path}: get_config must return a ConfigDict, got {type(config).__name__}")
    if config.experiment.ladder:
        apply_rung(config, rung)  # idempotent when get_config(arg) applied it already
    elif rung:
        raise ConfigError(f"{path}: --rung={rung} given but the experiment defines no ladder")
    for key, text in parse_sets(sets):
        set_dotted(config, key, parse_value(config, key, text))
    validate(config, path)
    return config


def validate(config, path: str = "experiment") -> None:
    e = config.experiment
    if not e.name:
        raise ConfigError(f"{path}: experiment.name is empty")
    if criteria.is_task_metric(e.metric):
        try:
            criteria.check_experiment(config)
        except ValueError as err:
            raise ConfigError(f"{path}: {err}") from None
    elif e.metric not in METRICS:
        raise ConfigError(f"{path}: experiment.metric {e.metric!r} is not one of {METRICS} "
                          "or task:<task>/<metric>")
    if e.comparator not in archive.COMPARATORS:
        raise ConfigError(f"{path}: experiment.comparator {e.comparator!r} is not one of "
                          f"{tuple(archive.COMPARATORS)}")
    if e.split not in SPLITS:
        raise ConfigError(f"{path}: experiment.split {e.split!r} is not one of {SPLITS}")
    if e.ladder and e.rung not in rungs(config):
        rung_overrides(config, e.rung)


# ---------------------------------------------------------------------------------------------
# Provenance.

def _git(args, cwd):
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20)
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(path: str) -> dict:
    where = os.path.dirname(os.path.abspath(path))
    status = _git(["status", "--porcelain", "--untracked-files=no"], where)
    versions = {"python": platform.python_version()}
    for pkg in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return dict(git_commit=_git(["rev-parse", "HEAD"], where),
                git_dirty=None if status is None else bool(status),
                versions=versions, host=socket.gethostname(), platform=platform.platform())


def experiment_relpath(path: str) -> str:
    """The file relative to its git root (so a rerun works from a fresh clone), else absolute."""
    root = _git(["rev-parse", "--show-toplevel"], os.path.dirname(os.path.abspath(path)))
    full = os.path.realpath(path)
    if root and full.startswith(os.path.realpath(root) + os.sep):
        return os.path.relpath(full, os.path.realpath(root))
    return os.path.abspath(path)


def resolve_file(path: str, archive_dir: str | None = None) -> str:
    """An experiment file named in a record, from the cwd or the archive's git root."""
    if os.path.isfile(path):
        return path
    if archive_dir:
        root = _git(["rev-parse", "--show-toplevel"], os.path.abspath(archive_dir))
        if root and os.path.isfile(os.path.join(root, path)):
            return os.path.join(root, path)
    raise FileNotFoundError(f"experiment file {path!r} not found (from {os.getcwd()})")


def run_command(rel_file: str, rung: str, sets, seeds: int = 1) -> str:
    parts = ["lm", "run", rel_file] + ([f"--rung={rung}"] if rung else [])
    parts += [f"--set={k}={v}" for k, v in parse_sets(sets)]
    parts += [f"--seeds={seeds}"] if seeds > 1 else []
    return shlex.join(parts)


def parse_command(command: str) -> dict:
    """The keyword arguments of `run` that a record's `lm run ...` command stands for."""
    words = shlex.split(command)
    if words[:2] != ["lm", "run"] or len(words) < 3:
        raise ValueError(f"not an `lm run` command: {command!r}")
    out = dict(path=words[2], rung=None, sets=[], seeds=1)
    for w in words[3:]:
        if w.startswith("--rung="):
            out["rung"] = w.split("=", 1)[1]
        elif w.startswith("--seeds="):
            out["seeds"] = int(w.split("=", 1)[1])
        elif w.startswith("--set="):
            out["sets"].append(w.split("=", 1)[1])
        else:
            raise ValueError(f"unexpected word {w!r} in {command!r}")
    return out


# ---------------------------------------------------------------------------------------------
# Running one rung.

class Interrupted(LmError):
    """SIGTERM during a run: turned into an exception so a broken record gets written."""

    exit_code = 128 + signal.SIGTERM


class RecordNotWritten(LmError):
    """The archive could not take a record; the run's results are kept elsewhere."""


class TrainedButFailed(LmError):
    """Training reached its end but a later step failed: the workdir is kept, nothing is lost."""


TEMP_PREFIX = "lm-run-"


def _remove_abandoned_workdirs() -> None:
    """Temporary workdirs of `lm run`s that were killed (their trainer's lock names a dead
    process): a kill -9 cannot clean up after itself, the next run does."""
    from lm.guard import stale_lock

    root = tempfile.gettempdir()
    for name in os.listdir(root):
        path = os.path.join(root, name)
        if name.startswith(TEMP_PREFIX) and os.path.isdir(path) and stale_lock(path):
            shutil.rmtree(path, ignore_errors=True)


def _check_writable(directory: str, flag: str) -> None:
    """Fail before training, not after it, when a directory the run writes to is not writable."""
    try:
        os.makedirs(directory, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".lm-probe-", dir=directory)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise LmError(f"{flag}={directory} is not writable ({e.strerror or e}); choose another "
                      f"{flag} or fix its permissions") from None


def _write(record: dict, archive_dir: str, workdir: str, own_workdir: bool) -> str:
    """Write the record; if the archive cannot take it, keep it (and the workdir) and say where."""
    try:
        return archive.write_record(record, archive_dir)
    except OSError as e:
        kept = os.path.join(workdir, "record.json")
        try:
            from lm.files import atomic_write

            atomic_write(kept, record_json(dict(record, workdir=workdir)) + "\n")
            where = f"the run's results are kept in {kept} (and its workdir {workdir})"
        except OSError:
            where = f"the run's workdir is kept at {workdir}"
        raise RecordNotWritten(
            f"could not write the record into --archive={archive_dir} ({e.strerror or e}); "
            f"{where}: copy record.json into the archive when it is writable") from e


def _final_metrics(summary: dict) -> dict:
    """The trainer's final evaluation on valid, plus the source's entropy rate and the excess
    over it when the trainer reports one (summary["entropy_rate"]: Markov sources)."""
    final = dict(summary.get("final") or {})
    rate = _num(summary.get("entropy_rate"))
    if rate is not None and _num(final.get("bits_per_byte")) is not None:
        final["entropy_rate"] = rate
        final["excess_bits_per_byte"] = float(final["bits_per_byte"]) - rate
    return final


def _num(x):
    """A float (NaN/inf kept: a diverged run is a result), or None when missing."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


@dataclasses.dataclass
class Outcome:
    """How training ended: "done" (summaries, one per seed), "diverged", "stopped" or "crashed"."""

    kind: str
    summaries: list = dataclasses.field(default_factory=list)
    error: BaseException | None = None
    wall_time: float = 0.0


def seed_configs(config, seeds: int) -> list:
    """The config at seeds seed, seed + 1, ..., seed + K - 1 (one seed: the config itself)."""
    if seeds < 1:
        raise ConfigError(f"--seeds={seeds}: give at least one seed")
    if seeds == 1:
        return [config]
    out = []
    for k in range(seeds):
        c = copy.deepcopy(config)
        c.seed = int(config.seed) + k
        out.append(c)
    return out


def seed_workdir(workdir: str, config, seeds: int) -> str:
    return workdir if seeds == 1 else os.path.join(workdir, f"seed{config.seed}")


def _train_seeds(configs, workdir, train_fn, record_id, progress) -> Outcome:
    """Train each seed's config in turn; a ConfigError (bad input, not a run) propagates."""
    from lm.guard import NonFiniteError, Stopped

    start, summaries = time.time(), []
    try:
        with trackers.tagged(record_id=record_id):  # W&B / MLflow runs name the record
            for c in configs:
                summaries.append(train_fn(c, seed_workdir(workdir, c, len(configs)), progress=progress))
    except ConfigError:
        raise
    except NonFiniteError as err:  # diverged: a result ("failed"), not a crash
        return Outcome("diverged", summaries, err, time.time() - start)
    except (Exception, KeyboardInterrupt, Interrupted) as err:
        stopped = isinstance(err, (KeyboardInterrupt, Interrupted, Stopped))
        c = configs[len(summaries)]
        _raise_if_trained(c, seed_workdir(workdir, c, len(configs)), err)
        return Outcome("stopped" if stopped else "crashed", summaries, err, time.time() - start)
    return Outcome("done", summaries, None, time.time() - start)


def _raise_if_trained(config, workdir: str, err: BaseException) -> None:
    """A failure after the final checkpoint (the end-of-run sample, say) is not a broken run:
    the trained model is kept and the error says where; nothing is deleted."""
    from lm.checkpoint import step_dirs

    if int(config.train.steps) in step_dirs(os.path.join(workdir, "checkpoints")):
        raise TrainedButFailed(
            f"training finished (checkpoint at step {config.train.steps} in {workdir}) but the "
            f"trainer failed after it: {type(err).__name__}: {err}; the workdir is kept, no record "
            f"was written: `lm train` with the same config and --workdir={workdir} finishes it") from err


def run(path: str, rung: str | None = None, *, sets=(), archive_dir: str = archive.DEFAULT_ARCHIVE,
        workdir: str | None = None, parent: str | None = None, prediction: dict | None = None,
        progress: bool = True, train_fn=None, seeds: int = 1) -> tuple[dict, str]:
    """Train one rung at `seeds` seeds (seed, seed + 1, ...), decide its verdict, write one
    record (metric_value: the mean over seeds); returns (record, path)."""
    config = load_config(path, rung, sets)
    configs = seed_configs(config, seeds)
    resolve_init_from(config, progress=progress)  # a base experiment is trained (once) first
    for c in configs[1:]:  # the other seeds start from the same base
        if config.get("init_from"):
            c.init_from = config.init_from
    if config.get("init_from"):  # an unreachable pretrained model is bad input, not a broken run
        from lm.hf import pretrained
        pretrained.describe(config.init_from)
    record = new_record(config, path, sets, parent=parent, prediction=prediction, seeds=seeds)
    _check_writable(archive_dir, "--archive")
    if workdir is not None:
        _check_writable(workdir, "--workdir")
    own_workdir = workdir is None
    if own_workdir:
        _remove_abandoned_workdirs()
    if workdir is None and _process_count() > 1:  # one shared workdir for all processes
        workdir = _shared_workdir(archive_dir, record["id"])
    e = config.experiment
    workdir = workdir or tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{e.name}-{e.rung}-")
    if train_fn is None:
        from lm import trainer

        train_fn = trainer.train

    def on_term(signum, frame):
        raise Interrupted(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, on_term) if _main_thread() else None
    try:
        outcome = _train_seeds(configs, workdir, train_fn, record["id"], progress)
    except ConfigError:  # bad input, not a run: nothing to archive
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        raise
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)
    return _finish(record, outcome, config, archive_dir, workdir, own_workdir)


def new_record(config, path: str, sets, *, parent=None, prediction=None, seeds: int = 1) -> dict:
    """The record's identity, criterion and provenance, known before training."""
    e = config.experiment
    sets = [f"{k}={v}" for k, v in parse_sets(sets)]
    ladder_keys = {k for _, pairs in e.ladder for k, _ in pairs}
    rel = experiment_relpath(path)
    return dict(
        schema=archive.SCHEMA, id=archive.new_id(e.name, e.rung),
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        experiment=e.name, experiment_file=rel, rung=e.rung, ladder=rungs(config),
        hypothesis=e.hypothesis,
        criterion=dict(metric=e.metric, comparator=e.comparator, threshold=float(e.threshold),
                       split=e.split),
        overrides=sets,
        scale_overrides=sorted(s for s in sets if s.split("=", 1)[0] in ladder_keys),
        variant=" ".join(sorted(s for s in sets if s.split("=", 1)[0] not in ladder_keys)),
        command=run_command(rel, e.rung, sets, seeds), parent=parent, prediction=prediction,
        seed=int(config.seed), provenance=provenance(path),
    )


def _finish(record: dict, outcome: Outcome, config, archive_dir: str, workdir: str,
            own_workdir: bool) -> tuple[dict, str]:
    """The one place a record is completed and written, and the temporary workdir removed
    (only once the record is written: `_write` raises, keeping it, when it cannot be)."""
    record.update(config=config.to_dict(), config_hash=config_hash(config), wall_time=outcome.wall_time)
    if outcome.kind == "done":
        try:
            _fill_results(record, config, outcome, workdir, archive_dir)
        except Exception as err:  # the trained runs are kept: say where
            raise TrainedButFailed(f"training finished but its record could not be built "
                                   f"({type(err).__name__}: {err}); the workdir {workdir} is kept") from err
    elif outcome.kind == "diverged":
        record.update(verdict="failed", reason=str(outcome.error), final={}, metric_value=None,
                      surrogate_value=None)
    else:
        err = outcome.error
        reason = (f"the run was stopped: {type(err).__name__}: "
                  # (a temporary workdir cannot be resumed: no "rerun to resume" advice)
                  f"{str(err).split('; a checkpoint')[0] if own_workdir else err}"
                  if outcome.kind == "stopped" else f"the run crashed: {type(err).__name__}: {err}")
        record.update(verdict="broken", reason=reason,
                      error="".join(traceback.format_exception(err))[-4000:])
    if not own_workdir:
        record["workdir"] = workdir
    out = _write(record, archive_dir, workdir, own_workdir)  # raises, keeping the workdir
    if own_workdir and (outcome.kind != "done" or _main_after_barrier()):  # the record holds it
        shutil.rmtree(workdir, ignore_errors=True)
    if outcome.kind == "stopped":
        from lm.guard import Stopped

        print(f"interrupted; wrote broken record {out}", file=sys.stderr)
        if not isinstance(outcome.error, Stopped):  # the trainer stopped cleanly: the caller exits
            raise outcome.error
    return record, out


def _fill_results(record: dict, config, outcome: Outcome, workdir: str, archive_dir: str) -> None:
    """Results of a finished run: scale, history, final metrics (means over seeds), the
    baselines the trainer computed, the fit fields and the verdict."""
    summary = outcome.summaries[0]
    e = config.experiment
    finals = [_final_metrics(s) for s in outcome.summaries]
    resolved = _read_json(os.path.join(seed_workdir(workdir, config, len(finals)), "config.json")) or {}
    tokens, fpt = summary.get("tokens_seen"), summary.get("flops_per_token")
    record.update(
        devices=summary.get("devices"), mesh=summary.get("mesh"),
        vocab_size=resolved.get("model", {}).get("vocab_size"),
        num_params=summary.get("num_params"), flops_per_token=fpt, tokens_seen=tokens,
        train_flops=float(fpt) * float(tokens) if fpt and tokens else None,  # one seed's compute
        wall_time=sum(s.get("wall_time", 0.0) for s in outcome.summaries) or outcome.wall_time,
        steps=summary.get("step"), history=mean_history([s.get("history", []) for s in outcome.summaries]),
        final=mean_dict(finals), sample=summary.get("sample"),
        baselines=summary.get("baselines"), entropy_rate=_num(summary.get("entropy_rate")),
    )
    values = [_num(f.get(criteria.final_key(e.metric))) for f in finals]
    losses = [_num(f.get(criteria.surrogate_key(e.metric))) for f in finals]
    record.update(metric_value=_mean(values), surrogate_value=_mean(losses))
    if len(finals) > 1:
        record["seeds"] = dict(seeds=[int(config.seed) + k for k in range(len(finals))], values=values,
                               metric_std=_std(values), surrogate_values=losses, surrogate_std=_std(losses))
    # N, D and the schedule, what a scaling fit needs (lm/scaling/records.py).
    record.update(scaling_records.record_fields(config, summary, record["vocab_size"]))
    try:
        verdict, reason, trend = archive.decide_verdict(record, archive.load_records(archive_dir))
    except Exception as err:  # never lose a finished run to a failing fit
        verdict, reason, trend = "inconclusive", f"verdict could not be decided: {err!r}", None
    record.update(verdict=verdict, reason=reason, trend=trend)


def _mean(values):
    """Mean over seeds (NaN if any seed diverged); None when any seed lacks the metric."""
    if not values or any(v is None for v in values):
        return None
    return float(np.mean(values))


def _std(values):
    ok = [v for v in values if v is not None]
    return float(np.std(ok, ddof=1)) if len(ok) > 1 else 0.0


def mean_dict(dicts: list[dict]) -> dict:
    """Numeric entries averaged over seeds; other entries from the first seed."""
    out = dict(dicts[0])
    for k, v in dicts[0].items():
        vals = [_num(d.get(k)) for d in dicts]
        if isinstance(v, (int, float)) and not isinstance(v, bool) and None not in vals:
            out[k] = float(np.mean(vals))
    return out


def mean_history(histories: list[list[dict]]) -> list[dict]:
    """The seeds' logged metrics averaged entry by entry when they were logged at the same
    steps (the same config at another seed: always), else the first seed's."""
    first = histories[0]
    if len(histories) == 1 or any([h.get("step") for h in x] != [h.get("step") for h in first]
                                  for x in histories):
        return first
    return [mean_dict(list(entries)) for entries in zip(*histories)]


def _process_count() -> int:
    jax = sys.modules.get("jax")
    return jax.process_count() if jax is not None and jax.distributed.is_initialized() else 1


def _shared_workdir(archive_dir: str, record_id: str) -> str:
    """Process 0's choice of a workdir beside the archive (which every host must see)."""
    import numpy as np
    from jax.experimental import multihost_utils

    name = np.frombuffer(record_id.encode()[:200].ljust(200), np.uint8)
    name = bytes(multihost_utils.broadcast_one_to_all(name)).decode().strip()
    return os.path.join(os.path.abspath(archive_dir), ".work", name)


def _main_after_barrier() -> bool:
    """True on process 0 once every process is done with the workdir (always true alone)."""
    if _process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("lm run: workdir done")
    return archive.is_main_process()


def resolve_init_from(config, *, progress: bool = True) -> None:
    """init_from='experiment:FILE.py:RUNG' -> the workdir of that rung, trained once and cached.

    A chain (pretrain -> SFT -> DPO) stays a set of experiment files: the base rung is trained
    by the same trainer into <data dir>/bases/<name>-<rung>-<config hash> (resumable) and
    reused while its resolved config is unchanged. Other init_from values pass through.
    """
    spec = str(config.get("init_from", "") or "")
    if not spec.startswith(INIT_FROM_EXPERIMENT):
        return
    path, _, rung = spec[len(INIT_FROM_EXPERIMENT):].rpartition(":")
    if not path:
        path, rung = rung, ""
    base = load_config(resolve_file(path), rung or None)
    resolve_init_from(base, progress=progress)  # a base may start from another base
    from lm import trainer
    from lm.data.sources import data_dir

    name = f"{base.experiment.name}-{base.experiment.rung or 'base'}-{config_hash(base)}"
    workdir = os.path.join(data_dir(base.data), "bases", name)
    done = _read_json(os.path.join(workdir, "summary.json")) or {}
    if done.get("step") != int(base.train.steps):
        print(f"init_from: training {spec} into {workdir}", file=sys.stderr)
        trainer.train(base, workdir, progress=progress)
    config.init_from = workdir


def _read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


# ---------------------------------------------------------------------------------------------
# Reruns at a larger scale, with the prediction made first.

def estimate_compute(config, parent: dict) -> float | None:
    """Training FLOPs of a config, scaled from the parent record's measured FLOPs."""
    try:
        from lm.hf.pretrained import run_model_config
        from lm.models import flops_per_token
    except ImportError:
        return None
    vocab = parent.get("vocab_size") or config.model.vocab_size
    pc = ml_collections.ConfigDict(parent["config"])

    def flops(c):  # init_from: the pretrained model's size, not the config's model section
        m = dataclasses.replace(run_model_config(c), vocab_size=vocab)
        t = c.train
        return flops_per_token(m) * t.steps * t.batch_size * t.grad_accum * m.max_len

    try:
        ratio = flops(config) / flops(pc)
    except Exception:  # a model teammate's API change must not stop a rerun
        return None
    return float(parent["train_flops"]) * ratio if parent.get("train_flops") else None


def make_prediction(parent: dict, config, records: list[dict], ahead=()) -> dict | None:
    """What the archive's trend says the run about to start will give (stored before it runs)."""
    compute = estimate_compute(config, parent)
    same = [r for r in records if archive.series_key(r) == archive.series_key(parent)]
    points = archive.series_points(same)
    target = scaling_records.target_of(config, parent, compute)
    trend = archive.trend_of(points, target=target)
    if trend is None:
        return None
    if ahead and "law" in trend:  # the ladder's rungs still to run: which is the cheapest to pass?
        cands = [dict(rung=name, **t) for name, t in
                 ((name, scaling_records.target_of(c, parent, None)) for name, c in ahead) if t]
        trend["rungs_ahead"], trend["cheapest_rung"] = forecast.rungs_ahead(trend, cands)
    trend.update(made=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), from_records=[p["id"] for p in points],
                 rung=config.experiment.rung, estimated_compute=compute)
    return trend


def rerun(parent: dict, rung: str = "next", *, sets=(), archive_dir: str = archive.DEFAULT_ARCHIVE,
          progress: bool = True, train_fn=None, seeds: int | None = None) -> tuple[dict, str]:
    """Rerun an archived record at the next/named rung (at `seeds` seeds; default: as many as
    the parent had); the new record links to it by parent id."""
    path = resolve_file(parent["experiment_file"], archive_dir)
    old_sets = parse_sets(parent.get("overrides", []))
    new_sets = parse_sets(sets)
    merged = {k: v for k, v in old_sets}
    merged.update({k: v for k, v in new_sets})
    config = load_config(path, None)
    target = next_rung(config, parent["rung"]) if rung == "next" else rung
    all_sets = [f"{k}={v}" for k, v in merged.items()]
    target_config = load_config(path, target, all_sets)
    names = rungs(config)
    later = names[names.index(parent["rung"]) + 1:] if parent["rung"] in names else []
    ahead = [(r, load_config(path, r, all_sets)) for r in later]
    prediction = make_prediction(parent, target_config, archive.load_records(archive_dir), ahead)
    if prediction:
        at = prediction.get("at") or {}
        print(f"prediction for {parent['experiment']} @ {target}: "
              + (f"loss {at['surrogate']:.4g}, {parent['criterion']['metric']} {at.get('metric')}, "
                 f"passes={at.get('passes')}; " if at else "")
              + prediction["reason"]
              + (f"; cheapest rung predicted to pass: {prediction['cheapest_rung']}"
                 if prediction.get("cheapest_rung") else ""), file=sys.stderr)
    seeds = seeds or len((parent.get("seeds") or {}).get("values") or [0])
    return run(path, target, sets=all_sets, archive_dir=archive_dir, parent=parent["id"],
               prediction=prediction, progress=progress, train_fn=train_fn, seeds=seeds)


def record_json(record: dict) -> str:
    return json.dumps({k: v for k, v in record.items() if not k.startswith("_")}, indent=1,
                      default=str)
