"""Training objectives: one record per objective (lm/objectives/base.py says what a record holds).

    get(name) -> Objective   the record of config train.objective (ConfigError naming the choices)
    OBJECTIVES               name -> record
    metric_names()           every eval metric some objective reports (experiment criteria)

Entries: next_token, prefix_lm (lm/objectives/language.py); dpo, rpo (lm/objectives/preference.py).
The trainer and evaluation read the record, never the name: adding an objective is one entry in
one of those files (a new family: a new file, listed below).
"""

from __future__ import annotations

from lm.config import ConfigError
from lm.objectives import language, preference

OBJECTIVES = {o.name: o for o in (*language.ENTRIES, *preference.ENTRIES)}


def get(name: str):
    if name not in OBJECTIVES:
        raise ConfigError(f"train.objective: {name!r} is not one of {sorted(OBJECTIVES)}")
    return OBJECTIVES[name]


def metric_names() -> tuple:
    seen = {}
    for objective in OBJECTIVES.values():
        seen.update(dict.fromkeys(objective.metrics))
    return tuple(seen)
