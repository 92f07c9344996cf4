"""`lm export --workdir=DIR --out=DIR [--checkpoint=STEP]`

Writes an lm workdir (imported, fine-tuned or trained from scratch) as a Hugging Face model
directory that `transformers` loads: config.json, model.safetensors (float32) and, when the
workdir's tokenizer is a Hugging Face one, tokenizer.json + tokenizer_config.json. The family is
the imported one (workdir/hf/source.json) or the one whose layers the model's knobs describe
(lm.hf.configs.family_for); a model no family can hold exactly is an error. OUT must not exist
or be empty; it is written beside and renamed into place when complete.
"""

import json
import os
import shutil
import sys
import tempfile

from absl import flags

_WORKDIR = flags.DEFINE_string("workdir", None, "lm workdir to export.")
_OUT = flags.DEFINE_string("out", None, "New directory for the Hugging Face files.")
_CHECKPOINT = flags.DEFINE_integer("checkpoint", None, "Checkpoint step; default the latest.")


def _read_json(path: str):
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def export_workdir(workdir: str, out: str, step: int | None = None) -> dict:
    from lm import checkpoint, trainer
    from lm import workdir as workdir_files
    from lm.config import model_config
    from lm.data.tokenizers import load_tokenizer
    from lm.hf import configs, load
    from lm.hf.safetensors_io import save_file

    if not out:
        raise ValueError("--out=DIR is required")
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise ValueError(f"--out={out} exists and is not an empty directory")
    step = checkpoint.checkpoint_step(workdir, step)
    config = workdir_files.config_from_json(_read_json(os.path.join(workdir, "config.json")))
    source = _read_json(os.path.join(workdir, "hf", "source.json")) or {}
    family = source.get("family") or configs.family_for(model_config(config))
    tokenizer = load_tokenizer(os.path.join(workdir, "tokenizer"))

    run, state = trainer.load_run(workdir, step=step)
    hf_config = configs.to_hf(run.model_cfg, family, _read_json(os.path.join(workdir, "hf", "config.json")))
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        tensors = dict(load.export_tensors(state["params"], family, run.model_cfg))
        save_file(tensors, os.path.join(tmp, "model.safetensors"))
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(hf_config, f, indent=2)
        has_tokenizer = hasattr(tokenizer, "export")
        if has_tokenizer:
            tokenizer.export(tmp)
        if os.path.isdir(out):
            os.rmdir(out)
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"out": out, "family": family, "checkpoint": step, "tensors": len(tensors),
            "tokenizer": "tokenizer.json" if has_tokenizer else
            f"none (a {tokenizer.name} tokenizer has no Hugging Face form)"}


def main(argv):
    try:
        if len(argv) > 1:
            raise ValueError(f"unexpected arguments {argv[1:]} (flags are --name=value)")
        result = export_workdir(_WORKDIR.value, _OUT.value, _CHECKPOINT.value)
    except (ValueError, FileNotFoundError, NotADirectoryError) as e:
        if os.environ.get("LM_DEBUG"):
            raise
        text = str(e).strip().splitlines()
        sys.exit(f"lm export: error: {text[0] if text else type(e).__name__}")
    print(json.dumps(result))
