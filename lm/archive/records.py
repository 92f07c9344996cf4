"""Run records: write once, read back, find, group into series.

A record is one JSON file `<archive>/<id>.json`, written atomically (a hidden temp file in the
same directory, fsync, then a hard link or os.replace to the final name) and never edited
afterwards, so a killed run leaves either nothing or a whole record, and two runs writing at
once both land (their ids differ in a random suffix). Files that are not records (corrupt
JSON, someone else's JSON, temp files) are skipped with a warning.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import time
import warnings

import numpy as np

from lm.evals import criteria
from lm.files import is_main_process
from lm.scaling.records import finite  # noqa: F401  (one definition; archive users import it here)

SCHEMA = "lm.record/1"
DEFAULT_ARCHIVE = os.path.join("experiments", "archive")
VERDICTS = ("passed", "not_yet", "failed", "inverse", "inconclusive", "broken")
COMPARATORS = {"<=": lambda v, t: v <= t, "<": lambda v, t: v < t,
               ">=": lambda v, t: v >= t, ">": lambda v, t: v > t}


class ArchiveWarning(UserWarning):
    """A file in the archive that is not a readable record."""


# ---------------------------------------------------------------------------------------------
# Writing and reading records.

def new_id(name: str, rung: str) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in f"{name}-{rung}")
    return f"{stamp}-{safe}-{secrets.token_hex(3)}"


def _jsonable(x):
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if hasattr(x, "to_dict"):
        return x.to_dict()
    return str(x)


def write_record(record: dict, archive_dir: str) -> str:
    """Write a new record atomically and return its path; never replaces an existing file.
    In a multi-process run only process 0 writes (the others get the path it would have)."""
    if not is_main_process():
        return os.path.join(archive_dir, record["id"] + ".json")
    os.makedirs(archive_dir, exist_ok=True)
    record = dict(record)
    record.setdefault("schema", SCHEMA)
    for _ in range(100):
        path = os.path.join(archive_dir, record["id"] + ".json")
        tmp = os.path.join(archive_dir, f".{record['id']}.{os.getpid()}.{secrets.token_hex(3)}.tmp")
        try:
            with open(tmp, "w") as f:
                json.dump(record, f, indent=1, default=_jsonable)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
        except BaseException:  # a full disk: no half-written temp file left behind
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        try:
            try:
                os.link(tmp, path)  # fails if the name exists: a record is never overwritten
            except FileExistsError:
                record["id"] = new_id(record.get("experiment", "x"), record.get("rung", "x"))
                continue
            except OSError:  # file systems without hard links
                if os.path.exists(path):
                    record["id"] = new_id(record.get("experiment", "x"), record.get("rung", "x"))
                    continue
                os.replace(tmp, path)
            return path
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise RuntimeError(f"could not find a free record name in {archive_dir}")


def load_records(archive_dir: str) -> list[dict]:
    """Every readable record, oldest first; other files are skipped with an ArchiveWarning."""
    if not os.path.isdir(archive_dir):
        return []
    records = []
    for name in sorted(os.listdir(archive_dir)):
        path = os.path.join(archive_dir, name)
        if name.startswith(".") or name == "README.md" or not os.path.isfile(path):
            continue
        if not name.endswith(".json"):
            warnings.warn(f"skipping {path}: not a .json record", ArchiveWarning, stacklevel=2)
            continue
        try:
            with open(path) as f:
                rec = json.load(f)
        except (OSError, ValueError) as e:
            warnings.warn(f"skipping {path}: unreadable JSON ({e})", ArchiveWarning, stacklevel=2)
            continue
        if not isinstance(rec, dict) or rec.get("schema") != SCHEMA or "id" not in rec:
            warnings.warn(f"skipping {path}: not an lm run record (no schema {SCHEMA!r})",
                          ArchiveWarning, stacklevel=2)
            continue
        rec["_path"] = path
        records.append(rec)
    records.sort(key=lambda r: (r.get("created", ""), r["id"]))
    return records


def find_record(records: list[dict], ident: str) -> dict:
    """The record whose id equals, or uniquely starts with / contains, `ident`."""
    exact = [r for r in records if r["id"] == ident or os.path.basename(r.get("_path", "")) == ident]
    if exact:
        return exact[0]
    hits = [r for r in records if r["id"].startswith(ident)] or [r for r in records if ident in r["id"]]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise FileNotFoundError(f"no record with id {ident!r} in the archive ({len(records)} records)")
    raise ValueError(f"{ident!r} matches {len(hits)} records: {[r['id'] for r in hits][:5]}")


# ---------------------------------------------------------------------------------------------
# Series: the runs of one experiment that a trend is fitted across.

def lower_is_better(comparator: str) -> bool:
    return comparator in ("<=", "<")


def meets(value, comparator: str, threshold: float) -> bool:
    return value is not None and math.isfinite(value) and COMPARATORS[comparator](value, threshold)


def series_key(record: dict) -> tuple:
    """Runs are comparable when experiment, criterion and variant (non-scale overrides) agree."""
    crit = record.get("criterion", {})
    return (record.get("experiment"), crit.get("metric"), crit.get("comparator"),
            crit.get("threshold"), crit.get("split"), record.get("variant", ""))


def point_key(record: dict) -> tuple:
    return (record.get("rung"), tuple(record.get("scale_overrides", [])))


def series_points(records: list[dict]) -> list[dict]:
    """The latest usable record per (rung, scale overrides), sorted by training compute.

    A redesigned ladder retires the old rungs: only rungs of the newest record's ladder count
    (records without a ladder keep every rung)."""
    latest = {}
    current = next((r.get("ladder") for r in reversed(records) if r.get("ladder")), None)
    for r in records:
        if current and r.get("rung") not in current:
            continue
        if r.get("verdict") == "broken" or not finite(r.get("metric_value")):
            continue
        if not finite(r.get("train_flops")) or r["train_flops"] <= 0:
            continue
        latest[point_key(r)] = r  # records come oldest first
    return sorted(latest.values(), key=lambda r: r["train_flops"])


def eval_noise(record: dict) -> float:
    """Std of the last three evaluations of the criterion's metric in the run's history."""
    key = criteria.history_key(record.get("criterion", {}).get("metric", ""))
    vals = [h[key] for h in record.get("history", []) if finite(h.get(key))]
    return float(np.std(vals[-3:])) if len(vals) >= 2 else 0.0


def seed_noise(record: dict) -> float:
    """Std of the criterion metric across the seeds of a `--seeds=K` record (0 for one seed)."""
    s = (record.get("seeds") or {}).get("metric_std")
    return float(s) if finite(s) else 0.0


def group_series(records: list[dict]) -> dict:
    groups = {}
    for r in records:
        groups.setdefault(series_key(r), []).append(r)
    return groups


def created_order(records: list[dict]) -> list[dict]:
    """Records in the order they were written (creation time, then id: ids start with it)."""
    return sorted(records, key=lambda r: (r.get("created", ""), r["id"]))

