"""Optional experiment trackers beside TensorBoard and metrics.jsonl: Weights & Biases, MLflow.

`train.trackers=("wandb", "mlflow")` turns them on (install them with `pip install 'lm[trackers]'`).
Each gets every logged step's metrics (the same numbers and names as TensorBoard), the resolved
config, and, under `lm run` / `lm archive rerun`, the archive record id. A library is imported
only when its tracker is asked for, so a run without trackers never loads either.

    train.tracker_project   W&B project / MLflow experiment name
    train.tracker_run_name  run name ('' = the workdir's name)
    train.tracking_uri      MLflow tracking URI ('' = $MLFLOW_TRACKING_URI or MLflow's default)

A resumed run continues the same tracker run: its id is kept in the workdir's trackers.json.
W&B writes its local files under $WANDB_DIR, else the workdir; WANDB_MODE=offline works as usual.
"""

from __future__ import annotations

import contextlib
import json
import os
import time

from lm.config import ConfigError
from lm.files import atomic_write

KNOWN = ("wandb", "mlflow")
_TAGS: dict = {}  # set by `tagged` around a training run (lm.experiment: the record id)


@contextlib.contextmanager
def tagged(**tags):
    """Tags that trackers started inside this block attach to their run (e.g. record_id)."""
    saved = dict(_TAGS)
    _TAGS.update(tags)
    try:
        yield
    finally:
        _TAGS.clear()
        _TAGS.update(saved)


def validate(config) -> tuple[str, ...]:
    """The configured tracker names, each known and importable (the trainer checks this before
    it builds anything); a ConfigError naming the problem otherwise."""
    names = tuple(config.train.trackers)
    for name in names:
        if name not in KNOWN:
            raise ConfigError(f"train.trackers: unknown tracker {name!r}; known: {', '.join(KNOWN)}")
        _require(name)
    return names


def scalars(record: dict) -> dict:
    """The numeric metrics of one metrics.jsonl record, named as in TensorBoard."""
    return {k.replace("eval_", "eval/", 1): float(v) for k, v in record.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


def start(config, workdir: str, start_step: int) -> list:
    """Open the configured trackers (none: an empty list, nothing imported)."""
    names = validate(config)
    if not names:
        return []
    ids_path = os.path.join(workdir, "trackers.json")
    ids = _read_ids(ids_path) if start_step else {}
    run_name = config.train.tracker_run_name or os.path.basename(os.path.normpath(workdir))
    opened = []
    try:
        for name in names:
            cls = {"wandb": WandbTracker, "mlflow": MlflowTracker}[name]
            try:
                opened.append(cls(config, workdir, run_name, ids.get(name)))
            except Exception as e:  # e.g. MLflow refusing a tracking URI: one line, not a trace
                msg = " ".join(str(e).split())
                raise ConfigError(f"train.trackers: {name} could not start: {msg}") from None
    except BaseException:
        for t in opened:
            t.close()
        raise
    atomic_write(ids_path, json.dumps({t.name: t.run_id for t in opened}, indent=1) + "\n")
    return opened


def _read_ids(path: str) -> dict:
    try:
        with open(path) as f:
            ids = json.load(f)
        return ids if isinstance(ids, dict) else {}
    except (OSError, ValueError):
        return {}


def _require(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(f"train.trackers asks for {module}, which does not import ({e}); "
                          f"install it with `pip install 'lm[trackers]'`") from None


class WandbTracker:
    name = "wandb"

    def __init__(self, config, workdir, run_name, run_id):
        wandb = _require("wandb")
        self._run = wandb.init(
            project=config.train.tracker_project, name=run_name, id=run_id,
            resume="allow" if run_id else None, dir=os.environ.get("WANDB_DIR") or workdir,
            config={**config.to_dict(), **_TAGS}, reinit="create_new")
        self.run_id = self._run.id
        for key, value in _TAGS.items():
            self._run.summary[key] = value

    def log(self, record: dict) -> None:
        self._run.log(scalars(record), step=int(record["step"]))

    def close(self) -> None:
        self._run.finish()


class MlflowTracker:
    name = "mlflow"

    def __init__(self, config, workdir, run_name, run_id):
        mlflow = _require("mlflow")
        self._client = mlflow.MlflowClient(tracking_uri=config.train.tracking_uri or None)
        if run_id is None:
            exp_name = config.train.tracker_project
            exp = self._client.get_experiment_by_name(exp_name)
            exp_id = exp.experiment_id if exp else self._client.create_experiment(exp_name)
            tags = {"mlflow.runName": run_name, "lm.workdir": os.path.abspath(workdir),
                    **{f"lm.{k}": str(v) for k, v in _TAGS.items()}}
            run_id = self._client.create_run(exp_id, run_name=run_name, tags=tags).info.run_id
            params = _flatten(config.to_dict())
            from mlflow.entities import Param

            # log_batch takes at most 100 params a call.
            items = [Param(k, v) for k, v in params.items()]
            for i in range(0, len(items), 100):
                self._client.log_batch(run_id, params=items[i:i + 100])
            self._client.log_dict(run_id, config.to_dict(), "config.json")
        else:
            self._client.update_run(run_id, status="RUNNING")
        self.run_id = run_id

    def log(self, record: dict) -> None:
        from mlflow.entities import Metric

        now, step = int(time.time() * 1000), int(record["step"])
        metrics = [Metric(k, v, now, step) for k, v in scalars(record).items()]
        self._client.log_batch(self.run_id, metrics=metrics)

    def close(self) -> None:
        self._client.set_terminated(self.run_id)


def _flatten(d: dict, prefix: str = "") -> dict:
    """{'train.steps': '100', ...}: MLflow params are flat strings (at most 6000 characters)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = str(v)[:6000]
    return out
