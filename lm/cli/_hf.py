"""The work behind `lm import` and `lm export` (no flags here, so both commands and tests can
import it): a Hugging Face model directory <-> an lm workdir. See lm/cli/import.py and
lm/cli/export.py for what each writes."""

import dataclasses
import json
import os
import shutil
import tempfile

import jax


def import_model(source: str, workdir: str, *, max_len: int = 0, data_source: str = "stdlib",
                 data_path: str = "", dtype: str = "float32") -> dict:
    """Builds the workdir (see module docstring); returns a summary dict."""
    from lm import checkpoint, runs
    from lm.config import base_config
    from lm.files import atomic_write
    from lm.hf import hub, load
    from lm.data.tokenizers import HFTokenizer

    if not workdir:
        raise ValueError("--workdir=DIR is required")
    if os.path.exists(workdir) and (not os.path.isdir(workdir) or os.listdir(workdir)):
        raise ValueError(f"--workdir={workdir} exists and is not an empty directory; import into a new one")
    directory = hub.local_dir(source)
    family, cfg, hf = load.pretrained_config(directory, max_len or None, dtype=dtype)
    tok = HFTokenizer.from_model_dir(directory, vocab_size=cfg.vocab_size)
    if tok.eos_id is None and isinstance(hf.get("eos_token_id"), int):
        tok.eos_id = hf["eos_token_id"]
    if tok.vocab_size > cfg.vocab_size:
        raise ValueError(f"{directory}: the tokenizer has {tok.vocab_size} ids, the model only "
                         f"{cfg.vocab_size} embedding rows")
    config = base_config()
    for key, value in dataclasses.asdict(cfg).items():
        config.model[key] = value
    config.data.source, config.data.path, config.data.tokenizer = data_source, data_path, "hf"
    # Evaluation runs at the training micro-batch: logits [B, T, V] of a large-vocabulary model
    # at T = 2048 are gigabytes per row, so the imported workdir starts small.
    config.train.batch_size = 8

    parent = os.path.dirname(os.path.abspath(workdir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".import-", dir=parent)
    try:
        tok.save(os.path.join(tmp, "tokenizer"))
        os.makedirs(os.path.join(tmp, "hf"))
        shutil.copyfile(os.path.join(directory, "config.json"), os.path.join(tmp, "hf", "config.json"))
        with open(os.path.join(tmp, "hf", "source.json"), "w") as f:
            json.dump({"source": source, "dir": os.path.abspath(directory), "family": family}, f)
        run = runs.setup(config, tmp)
        state = runs.init_state(run, load.load_params(directory, family, run.model_cfg,
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
    num_params = sum(int(x.size) for x in jax.tree.leaves(state["params"]))
    return {"workdir": workdir, "source": source, "family": family, "num_params": num_params,
            "vocab_size": run.model_cfg.vocab_size, "max_len": run.model_cfg.max_len}


def _read_json(path: str):
    """A workdir's JSON object file (None if absent); a damaged one is named."""
    from lm import workdir as workdir_files

    return workdir_files.read_json(path) if os.path.isfile(path) else None


def export_workdir(workdir: str, out: str, step: int | None = None) -> dict:
    from lm import checkpoint, runs
    from lm import workdir as workdir_files
    from lm.config import model_config
    from lm.data.tokenizers import load_tokenizer
    from lm.hf import configs, load

    if not out:
        raise ValueError("--out=DIR is required")
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise ValueError(f"--out={out} exists and is not an empty directory")
    step = checkpoint.checkpoint_step(workdir, step)
    config = workdir_files.config_from_json(_read_json(os.path.join(workdir, "config.json")))
    source = _read_json(os.path.join(workdir, "hf", "source.json")) or {}
    family = source.get("family") or configs.family_for(model_config(config))
    tokenizer = load_tokenizer(os.path.join(workdir, "tokenizer"))

    run, state = runs.load_run(workdir, step=step)
    hf_config = configs.to_hf(run.model_cfg, family, _read_json(os.path.join(workdir, "hf", "config.json")),
                              eos_id=getattr(tokenizer, "eos_id", None))
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        tensors = dict(load.export_tensors(state["params"], family, run.model_cfg))
        _write_export(tmp, out, tensors, hf_config, tokenizer)
        if os.path.isdir(out):
            os.rmdir(out)
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"out": out, "family": family, "checkpoint": step, "tensors": len(tensors),
            "tokenizer": "tokenizer.json" if hasattr(tokenizer, "export") else
            f"none (a {tokenizer.name} tokenizer has no Hugging Face form)"}


def _write_export(tmp: str, out: str, tensors: dict, hf_config: dict, tokenizer) -> None:
    """The files into tmp; a failed write (a full disk) is an OSError naming --out (the
    partial files are removed by the caller)."""
    from lm.hf.safetensors_io import save_file

    try:
        save_file(tensors, os.path.join(tmp, "model.safetensors"))
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(hf_config, f, indent=2)
        if hasattr(tokenizer, "export"):
            tokenizer.export(tmp)
    except OSError as e:
        raise OSError(e.errno, f"{e.strerror}; nothing was written to --out", out) from None
