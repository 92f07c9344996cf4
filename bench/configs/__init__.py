"""Benchmark configurations (experiment-style files: get_config(arg) -> ConfigDict)."""

from lm.config import base_config

TRAIN_KEYS = ("batch_size", "learning_rate", "b2", "grad_clip", "steps", "warmup_steps")


def from_rung(file: str, rungs: dict, arg: str, default: str, **common):
    """base_config() with the rung's and the file's `common` values: keys of train (TRAIN_KEYS)
    go to config.train, `data_*` keys to config.data, everything else to config.model."""
    arg = arg or default
    if arg not in rungs:
        raise ValueError(f"{file}: unknown rung {arg!r}; choose from {sorted(rungs)}")
    c = base_config()
    for key, value in {**common, **rungs[arg]}.items():
        if key in TRAIN_KEYS:
            c.train[key] = value
        elif key.startswith("data_"):
            c.data[key[len("data_"):]] = value
        else:
            c.model[key] = value
    c.experiment.rung = arg
    return c
