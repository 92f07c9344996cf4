"""Starting a run from a pretrained model: the `init_from` config key (top level, '' = off).

    init_from = "hf:ORG/NAME"       a Hugging Face hub model (cached by huggingface_hub)
    init_from = "/path/to/hf_dir"   a local directory with config.json + safetensors + tokenizer.json
    init_from = "/path/to/workdir"  an lm workdir (trained, or made by `lm import`): newest checkpoint

The pretrained model fixes the architecture: every model field except RUN_FIELDS is taken from it
(the experiment keeps its context length for rope models, dropout, dtype, remat), and
data.tokenizer becomes 'hf' (or the workdir's tokenizer kind) with the model's tokenizer copied
into the run's workdir. The trainer calls `apply` in setup and `initial_params` for a fresh start
(a resumed run restores its own checkpoint instead).
"""

from __future__ import annotations

import dataclasses
import json
import os

from lm.config import ConfigError, ModelConfig, model_config

# Model fields a fine-tuning run may choose; all others must be the pretrained model's.
RUN_FIELDS = ("max_len", "dropout", "dtype", "remat", "scan_layers")


def _is_workdir(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "checkpoints")) and os.path.isdir(os.path.join(path, "tokenizer"))


def describe(source: str) -> dict:
    """{'kind': 'hf' | 'workdir', 'dir', 'model': ModelConfig kwargs, 'family' (hf only)}."""
    from lm.hf import configs, hub, load

    if not hub.is_hub(source) and os.path.isdir(source) and _is_workdir(source):
        with open(os.path.join(source, "config.json")) as f:
            saved = json.load(f)
        return {"kind": "workdir", "dir": source, "model": saved["model"],
                "tokenizer": saved.get("data", {}).get("tokenizer")}
    directory = hub.local_dir(source)
    family, kw = configs.from_hf(load.read_config(directory))
    return {"kind": "hf", "dir": directory, "model": kw, "family": family, "tokenizer": "hf"}


def apply(config, workdir: str | None):
    """config with the pretrained architecture and tokenizer (unchanged when init_from is '')."""
    source = config.get("init_from", "")
    if not source:
        return config
    info = describe(source)
    ours = config.model.to_dict()
    pre = dataclasses.asdict(ModelConfig(**info["model"]))
    for key, value in pre.items():
        if key in RUN_FIELDS and not (key == "max_len" and pre.get("position") == "learned"):
            continue
        config.model[key] = value
    if ours.get("max_len", 0) > pre["max_len"] and pre.get("position") == "learned":
        raise ConfigError(f"model.max_len={ours['max_len']} exceeds the pretrained model's "
                          f"learned positions ({pre['max_len']})")
    config.data.tokenizer = info["tokenizer"]
    model_config(config)  # validates the combination
    if workdir is None:
        raise ConfigError("init_from needs a workdir (the pretrained tokenizer is kept there)")
    _copy_tokenizer(info, os.path.join(workdir, "tokenizer"), config.model.vocab_size)
    return config


def run_model_config(config) -> ModelConfig:
    """The model a run of `config` trains: with init_from, the pretrained architecture plus the
    run's RUN_FIELDS (as `apply` resolves it, from config files only: no weights, no workdir).
    Scaling fits need it before and after a run (N of a Pythia rung is Pythia's, not the config's)."""
    ours = model_config(config)
    source = str(config.get("init_from", "") or "")
    if not source or source.startswith("experiment:"):  # a base experiment: resolved when it runs
        return ours
    pre = ModelConfig(**describe(source)["model"])
    keep = {k: getattr(ours, k) for k in RUN_FIELDS
            if not (k == "max_len" and pre.position == "learned")}
    return dataclasses.replace(pre, **keep)


def _copy_tokenizer(info: dict, target: str, vocab_size: int) -> None:
    if os.path.isdir(target):
        return
    if info["kind"] == "workdir":
        from lm.data.tokenizers import load_tokenizer

        load_tokenizer(os.path.join(info["dir"], "tokenizer")).save(target)
        return
    from lm.data.tokenizers import HFTokenizer

    tok = HFTokenizer.from_model_dir(info["dir"], vocab_size=vocab_size)
    if tok.vocab_size > vocab_size:
        raise ConfigError(f"{info['dir']}: the tokenizer has {tok.vocab_size} ids, the model only "
                          f"{vocab_size} embedding rows")
    tok.save(target)


def initial_params(run):
    """Pretrained params placed in run.param_shardings, or None when init_from is ''."""
    source = run.config.get("init_from", "")
    if not source:
        return None
    info = describe(source)
    if info["kind"] == "hf":
        from lm.hf import load

        return load.load_params(info["dir"], info["family"], run.model_cfg, run.param_shardings)
    return _workdir_params(info["dir"], run)


def _workdir_params(directory: str, run):
    """The newest checkpoint's params of an lm workdir, restored straight into our shardings."""
    import jax
    import orbax.checkpoint as ocp

    from lm import checkpoint as ckpt_lib

    step = ckpt_lib.checkpoint_step(directory)
    path = os.path.join(os.path.abspath(directory), "checkpoints", str(step), "state")
    target = {"params": run.abstract_state["params"]}
    with ocp.PyTreeCheckpointer() as ckptr:
        restore_args = ocp.checkpoint_utils.construct_restore_args(target)
        out = ckptr.restore(path, args=ocp.args.PyTreeRestore(
            item=target, restore_args=restore_args, partial_restore=True))
    shapes_ok = jax.tree.map(lambda a, b: a.shape == b.shape, out["params"], target["params"])
    if not all(jax.tree.leaves(shapes_ok)):
        raise ConfigError(f"init_from={directory}: checkpoint shapes differ from the model")
    return out["params"]
