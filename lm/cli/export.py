"""`lm export --workdir=DIR --out=DIR [--checkpoint=STEP]`

Writes an lm workdir (imported, fine-tuned or trained from scratch) as a Hugging Face model
directory that `transformers` loads: config.json, model.safetensors (float32) and, when the
workdir's tokenizer is a Hugging Face one, tokenizer.json + tokenizer_config.json. The family is
the imported one (workdir/hf/source.json) or the one whose layers the model's knobs describe
(lm.hf.configs.family_for); a model no family can hold exactly is an error. OUT must not exist
or be empty; it is written beside and renamed into place when complete.
"""

import json

from absl import flags

_WORKDIR = flags.DEFINE_string("workdir", None, "lm workdir to export.")
_OUT = flags.DEFINE_string("out", None, "New directory for the Hugging Face files.")
_CHECKPOINT = flags.DEFINE_integer("checkpoint", None, "Checkpoint step; default the latest.")




def main(argv):
    from lm.cli._hf import export_workdir

    if len(argv) > 1:
        raise ValueError(f"unexpected arguments {argv[1:]} (flags are --name=value)")
    result = export_workdir(_WORKDIR.value, _OUT.value, _CHECKPOINT.value)
    print(json.dumps(result))
