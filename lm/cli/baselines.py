"""`lm baselines --config=experiments/X.py[:rung] [--orders=0..K] [--out=FILE.json]`

n-gram (interpolated modified Kneser-Ney) and conditional stdlib compressor baselines on an
experiment's data, in bits per byte of the held-out split. Prints a table, writes JSON
(default: lm_baselines/<config>-<hash>.json under the current directory) and prints its path.
"""

import os

from absl import flags
from ml_collections import config_flags

from lm.cli._errors import one_line_errors

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:arg].")
_ORDERS = flags.DEFINE_string("orders", "0..8", "n-gram orders: 'a..b', 'K' (= 0..K) or 'a,b,c'.")
_SPLIT = flags.DEFINE_string("split", "", "Held-out split; default config.experiment.split.")
_OUT = flags.DEFINE_string("out", "", "JSON output file.")
_COMPRESSORS = flags.DEFINE_bool("compressors", True, "Also run zlib, bz2 and lzma.")


def load_config_flag(holder, name: str = "config"):
    """(config, 'file[:arg]') from a config_flags flag, with the rung of `file:rung` applied.

    If the arg names a rung of config.experiment.ladder that the file did not apply itself,
    its overrides are applied here, and command-line --config.* overrides again on top.
    """
    flag = flags.FLAGS[name]
    if not flag.present:
        raise ValueError(f"--{name}=experiments/FILE.py[:rung] is required")
    arg = flag.config_filename
    path = arg.partition(":")[0]
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--{name}={arg}: no such config file {path!r}")
    try:
        config = holder.value
    except OSError as e:  # config_flags reports a broken file as an IOError
        raise ValueError(f"--{name}={arg}: cannot load it: " +
                         " ".join(line.strip() for line in str(e).splitlines()[-2:])) from None
    from lm.experiment import apply_flag_rung

    apply_flag_rung(config, arg, config_flags.get_override_values(flag))
    return config, arg


def _default_out(config_arg: str, config) -> str:
    from lm.config import config_hash

    path, _, arg = config_arg.partition(":")
    stem = os.path.splitext(os.path.basename(path))[0] + (f"-{arg}" if arg else "")
    return os.path.join("lm_baselines", f"{stem}-{config_hash(config)}.json")


@one_line_errors("baselines")
def main(argv):
    from lm import baselines

    config, config_arg = load_config_flag(_CONFIG, "config")
    orders = baselines.parse_orders(_ORDERS.value)
    result = baselines.run_baselines(config, orders, split=_SPLIT.value or None,
                                     compressors=_COMPRESSORS.value)
    result["config"] = config_arg
    print(baselines.format_table(result))
    out = baselines.write_json(result, _OUT.value or _default_out(config_arg, config))
    print(f"wrote {out}")
