"""`lm import SOURCE --workdir=DIR [--max_len=N] [--data_source=stdlib --data_path=PATH]`

Makes an lm workdir from a pretrained Hugging Face model: SOURCE is hf:ORG/NAME (downloaded and
cached by huggingface_hub) or a local directory with config.json, safetensors weights and
tokenizer.json. The workdir holds config.json (model translated, data.tokenizer='hf'), the
tokenizer, and an Orbax checkpoint at step 0, so `lm eval`, `lm sample` and `lm train` (fine-tune:
an experiment whose model and data match, e.g. with init_from=SOURCE) use it like a trained one.
--data_source / --data_path choose the text `lm eval` and `lm train` read (default: stdlib).
The workdir is built beside DIR and renamed into place only when complete.
"""

import dataclasses
import json
import os
import shutil
import sys
import tempfile

from absl import flags

_WORKDIR = flags.DEFINE_string("workdir", None, "New workdir to create.")
_MAX_LEN = flags.DEFINE_integer("max_len", 0, "Context length for eval / training (rope models; "
                                "0: min(max_position_embeddings, 2048)).")
_DATA_SOURCE = flags.DEFINE_string("data_source", "stdlib", "data.source of the workdir's config.")
_DATA_PATH = flags.DEFINE_string("data_path", "", "data.path of the workdir's config.")


def import_model(source: str, workdir: str, *, max_len: int = 0, data_source: str = "stdlib",
                 data_path: str = "") -> dict:
    """Builds the workdir (see module docstring); returns a summary dict."""
    from lm import checkpoint, trainer
    from lm.config import base_config
    from lm.files import atomic_write
    from lm.hf import hub, load
    from lm.hf.tokenizer import HFTokenizer

    if not workdir:
        raise ValueError("--workdir=DIR is required")
    if os.path.exists(workdir) and (not os.path.isdir(workdir) or os.listdir(workdir)):
        raise ValueError(f"--workdir={workdir} exists and is not an empty directory; import into a new one")
    directory = hub.local_dir(source)
    family, cfg, _ = load.pretrained_config(directory, max_len or None)
    tok = HFTokenizer.from_model_dir(directory, vocab_size=cfg.vocab_size)
    if tok.vocab_size > cfg.vocab_size:
        raise ValueError(f"{directory}: the tokenizer has {tok.vocab_size} ids, the model only "
                         f"{cfg.vocab_size} embedding rows")
    config = base_config()
    for key, value in dataclasses.asdict(cfg).items():
        config.model[key] = value
    config.data.source, config.data.path, config.data.tokenizer = data_source, data_path, "hf"

    parent = os.path.dirname(os.path.abspath(workdir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".import-", dir=parent)
    try:
        tok.save(os.path.join(tmp, "tokenizer"))
        os.makedirs(os.path.join(tmp, "hf"))
        shutil.copyfile(os.path.join(directory, "config.json"), os.path.join(tmp, "hf", "config.json"))
        with open(os.path.join(tmp, "hf", "source.json"), "w") as f:
            json.dump({"source": source, "dir": os.path.abspath(directory), "family": family}, f)
        run = trainer.setup(config, tmp)
        state = trainer.init_state(run, load.load_params(directory, family, run.model_cfg,
                                                         run.param_shardings))
        ckpts = checkpoint.Checkpoints(tmp, keep=config.train.keep_checkpoints)
        try:
            ckpts.save(0, state, {"step": 0})
        finally:
            ckpts.close()
        atomic_write(os.path.join(tmp, "config.json"),
                     json.dumps(run.config.to_dict(), indent=2, default=str) + "\n")
        if os.path.isdir(workdir):
            os.rmdir(workdir)
        os.rename(tmp, workdir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    num_params = sum(int(x.size) for x in __import__("jax").tree.leaves(state["params"]))
    return {"workdir": workdir, "source": source, "family": family, "num_params": num_params,
            "vocab_size": run.model_cfg.vocab_size, "max_len": run.model_cfg.max_len}


def main(argv):
    if len(argv) != 2:
        sys.exit("lm import: error: expected one SOURCE (hf:ORG/NAME or a local directory), got "
                 f"{argv[1:]}; usage: lm import SOURCE --workdir=DIR")
    try:
        out = import_model(argv[1], _WORKDIR.value, max_len=_MAX_LEN.value,
                           data_source=_DATA_SOURCE.value, data_path=_DATA_PATH.value)
    except (ValueError, FileNotFoundError, NotADirectoryError) as e:
        if os.environ.get("LM_DEBUG"):
            raise
        text = str(e).strip().splitlines()
        sys.exit(f"lm import: error: {text[0] if text else type(e).__name__}")
    print(json.dumps(out))
