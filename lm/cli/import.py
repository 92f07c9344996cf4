"""`lm import SOURCE --workdir=DIR [--max_len=N] [--data_source=stdlib --data_path=PATH]`

Makes an lm workdir from a pretrained Hugging Face model: SOURCE is hf:ORG/NAME (downloaded and
cached by huggingface_hub) or a local directory with config.json, safetensors weights and
tokenizer.json. The workdir holds config.json (model translated, data.tokenizer='hf'), the
tokenizer, and an Orbax checkpoint at step 0, so `lm eval`, `lm sample` and `lm train` (fine-tune:
an experiment whose model and data match, e.g. with init_from=SOURCE) use it like a trained one.
--data_source / --data_path choose the text `lm eval` and `lm train` read (default: stdlib).
The workdir is built beside DIR and renamed into place only when complete.
"""

import json
import sys

from absl import flags

_WORKDIR = flags.DEFINE_string("workdir", None, "New workdir to create.")
_MAX_LEN = flags.DEFINE_integer("max_len", 0, "Context length for eval / training (rope models; "
                                "0: min(max_position_embeddings, 2048)).")
_DATA_SOURCE = flags.DEFINE_string("data_source", "stdlib", "data.source of the workdir's config.")
_DATA_PATH = flags.DEFINE_string("data_path", "", "data.path of the workdir's config.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                           "Compute dtype (model.dtype); parameters stay float32.")


def main(argv):
    if len(argv) != 2:
        sys.exit("lm import: error: expected one SOURCE (hf:ORG/NAME or a local directory), got "
                 f"{argv[1:]}; usage: lm import SOURCE --workdir=DIR")
    from lm.cli._hf import import_model

    out = import_model(argv[1], _WORKDIR.value, max_len=_MAX_LEN.value,
                       data_source=_DATA_SOURCE.value, data_path=_DATA_PATH.value,
                       dtype=_DTYPE.value)
    print(json.dumps(out))
