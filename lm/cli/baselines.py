"""`lm baselines --config=experiments/X.py[:rung] [--orders=0..K] [--out=FILE.json]`

n-gram (interpolated modified Kneser-Ney) and conditional stdlib compressor baselines on an
experiment's data, in bits per byte of the held-out split, on the bounded context the end of a
run uses (lm.baselines.TRAIN_CONTEXT_BYTES of train before the held-out split, HELDOUT_BYTES of
held-out; --train_bytes / --heldout_bytes change it). Prints a table, writes JSON
(default: lm_baselines/<config>-<hash>.json under the current directory) and prints its path.
"""

import os

from absl import flags
from ml_collections import config_flags

from lm.cli import _config_flag
from lm.cli._errors import one_line_errors

_CONFIG = _config_flag.one_line_errors(config_flags.DEFINE_config_file(
    "config", None, "Experiment config file[:arg]."), "baselines")
_ORDERS = flags.DEFINE_string("orders", "0..8", "n-gram orders: 'a..b', 'K' (= 0..K) or 'a,b,c'.")
_SPLIT = flags.DEFINE_string("split", "", "Held-out split; default config.experiment.split.")
_OUT = flags.DEFINE_string("out", "", "JSON output file.")
_COMPRESSORS = flags.DEFINE_bool("compressors", True, "Also run zlib, bz2 and lzma.")
_TRAIN_BYTES = flags.DEFINE_integer("train_bytes", 0, "Bytes of train context (the end of the train "
                                    "split); 0: lm.baselines.TRAIN_CONTEXT_BYTES, as at the end of a run.")
_HELDOUT_BYTES = flags.DEFINE_integer("heldout_bytes", 0, "Bytes of the held-out split used (its "
                                      "start); 0: lm.baselines.HELDOUT_BYTES, as at the end of a run.")


def _default_out(config_arg: str, config) -> str:
    from lm.config import config_hash

    path, _, arg = config_arg.partition(":")
    stem = os.path.splitext(os.path.basename(path))[0] + (f"-{arg}" if arg else "")
    return os.path.join("lm_baselines", f"{stem}-{config_hash(config)}.json")


@one_line_errors("baselines")
def main(argv):
    from lm import baselines

    config, config_arg = _config_flag.load(_CONFIG)
    orders = baselines.parse_orders(_ORDERS.value)
    bounds = {"train_bytes": _TRAIN_BYTES.value or baselines.TRAIN_CONTEXT_BYTES,
              "heldout_bytes": _HELDOUT_BYTES.value or baselines.HELDOUT_BYTES}
    if min(bounds.values()) < 1:
        raise ValueError(f"--train_bytes / --heldout_bytes must be positive, got {bounds}")
    result = baselines.run_baselines(config, orders, split=_SPLIT.value or None,
                                     compressors=_COMPRESSORS.value, **bounds)
    result["config"] = config_arg
    print(baselines.format_table(result))
    target = _OUT.value or _default_out(config_arg, config)
    try:
        out = baselines.write_json(result, target)
    except OSError as e:  # the table above holds the results: say so, do not lose them
        from lm.cli._errors import describe

        raise OSError(f"could not write --out={target}: {describe(e)}; the results are the "
                      "table printed above") from e
    print(f"wrote {out}")
