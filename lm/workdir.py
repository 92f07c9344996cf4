"""The files of a training workdir besides checkpoints: config.json, metrics.jsonl, tb/.

    config.json    the resolved config (read back with `config_from_json`)
    metrics.jsonl  one JSON object per logged step (`MetricsLog`, `read_metrics`)
    tb/            TensorBoard event files (`summary_writer`)
    data.json      where the data came from, resolved (absolute data.path and data dir), so
                   `lm eval` / `lm sample` find it from any directory without re-specifying it
"""

from __future__ import annotations

import json
import os
import sys
import warnings

import ml_collections

from lm.config import ConfigError, base_config
from lm.files import atomic_write


class MetricsLog:
    """metrics.jsonl: on resume from step s, lines after s (and a torn last line) are cut,
    atomically, so after any crash + resume each step appears exactly once. Each record also
    goes to the optional trackers (lm.trackers: W&B, MLflow), which close with the log."""

    def __init__(self, path: str, resume_step: int, enabled: bool = True, trackers=()):
        self.path, self.enabled, self.history, self.trackers = path, enabled, [], list(trackers)
        if not enabled:
            return
        kept = [r for r in _read_jsonl(path) if r.get("step", 0) <= resume_step]
        atomic_write(path, "".join(json.dumps(r) + "\n" for r in kept))
        self.history = kept
        self._f = open(path, "a")

    def write(self, record: dict) -> None:
        if self.enabled:
            self._f.write(json.dumps(record) + "\n")
            self._f.flush()
        for tracker in self.trackers:
            tracker.log(record)

    def close(self) -> None:
        if self.enabled:
            self._f.close()
        for tracker in self.trackers:
            tracker.close()


def _read_jsonl(path: str) -> list[dict]:
    """The JSON objects of a .jsonl file, skipping a torn or foreign line (a line that is not
    even UTF-8 is skipped with a warning naming it: it was damaged, not torn)."""
    if not os.path.exists(path):
        return []
    rows = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                warnings.warn(f"{path}, line {number}: not UTF-8 text ({e.reason} at byte "
                              f"{e.start}); the line is skipped", stacklevel=2)
                continue
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def read_metrics(workdir: str) -> list[dict]:
    """The logged steps of a workdir, oldest first."""
    return _read_jsonl(os.path.join(workdir, "metrics.jsonl"))


def summary_writer(logdir: str, start: int):
    """tensorboardX's SummaryWriter; `purge_step` drops events a killed run wrote past `start`.

    tensorboardX imports torch when it is installed (seconds, only for torch tensors);
    it is hidden during the import.
    """
    hide = "torch" not in sys.modules
    if hide:
        sys.modules["torch"] = None  # makes `import torch` raise ImportError
    try:
        from tensorboardX import SummaryWriter
    finally:
        if hide:
            del sys.modules["torch"]
    return SummaryWriter(logdir, purge_step=start or None)


def read_json(path: str) -> dict:
    """A workdir's JSON object file (config.json, ...); a damaged one is a ConfigError naming
    the file."""
    with open(path, "rb") as f:
        try:
            value = json.loads(f.read())
        except ValueError as e:  # also bad UTF-8
            raise ConfigError(f"{path}: not valid JSON ({e}); the workdir is damaged: "
                              "use a new one (or restore the file)") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: a JSON {type(value).__name__}, not an object; the workdir is "
                          "damaged: use a new one (or restore the file)")
    return value


def config_from_json(values: dict) -> ml_collections.ConfigDict:
    """A locked config: base defaults updated with a saved config.json's values."""
    config = base_config()

    def merge(node, d):
        for key, value in d.items():
            if key not in node:  # written by a newer version; nothing here reads it
                continue
            if isinstance(node[key], ml_collections.ConfigDict):
                merge(node[key], value)
            else:
                if isinstance(node[key], tuple) and isinstance(value, list):
                    value = _tuples(value)
                node[key] = value

    merge(config, values)
    return config


def _tuples(x):
    return tuple(_tuples(v) for v in x) if isinstance(x, list) else x


DATA_LOCATION = "data.json"


def write_data_location(workdir: str, data_cfg) -> None:
    """Record the resolved data location (absolute path and download/cache dir)."""
    from lm.data.sources import data_dir

    path = data_cfg.path
    if path and "=" not in path and "*" not in path:  # a plain file or directory
        path = os.path.abspath(os.path.expanduser(path))
    atomic_write(os.path.join(workdir, DATA_LOCATION), json.dumps(
        {"source": data_cfg.source, "path": path,
         "data_dir": os.path.abspath(data_dir(data_cfg))}, indent=1) + "\n")


def _recorded(workdir: str) -> dict:
    try:
        with open(os.path.join(workdir, DATA_LOCATION)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def resolve_data_location(workdir: str, config) -> None:
    """Point config.data at the recorded location when its own (empty, or relative to another
    directory) does not lead to the data from here."""
    rec = _recorded(workdir)
    for key in ("path", "data_dir"):
        mine, theirs = config.data[key], rec.get(key)
        if theirs and mine != theirs and (not mine or not os.path.exists(os.path.expanduser(mine))):
            if key == "data_dir" or os.path.exists(theirs):
                config.data[key] = theirs


def is_recorded_location(workdir: str, key: str, value) -> bool:
    """True when data.KEY=value is the location data.json recorded for this workdir."""
    return key in ("path", "data_dir") and bool(value) and _recorded(workdir).get(key) == value
