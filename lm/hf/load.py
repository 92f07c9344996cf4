"""Pretrained Hugging Face models as lm models: config, parameters placed tensor by tensor.

    family, cfg, hf_config = pretrained_config(directory)
    params = load_params(directory, family, cfg, shardings)     # each leaf in its NamedSharding
    tensors = export_tensors(params, family, cfg)               # {HF name: numpy array}

No parameter tree is ever built on the host as a whole: each lm parameter is converted from its
HF tensor(s) when placed (jax.make_array_from_callback hands each device its slice), so a model
larger than one device loads onto a mesh, and host memory holds one tensor at a time.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np
from flax import linen as nn

from lm.config import ModelConfig
from lm.hf import configs, weights
from lm.hf.safetensors_io import CheckpointError, SafetensorsDir

# Non-parameter buffers some checkpoints carry (causal masks, rotary tables).
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias", ".attention.bias", ".attention.masked_bias",
                    ".rotary_emb.inv_freq")


def read_config(directory: str) -> dict:
    path = os.path.join(directory, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{directory}: no config.json, so not a Hugging Face model directory")
    try:
        with open(path) as f:
            hf = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(hf, dict):
        raise ValueError(f"{path}: a {type(hf).__name__}, not a JSON object of model settings "
                         "(is it a Hugging Face model's config.json?)")
    return hf


def pretrained_config(directory: str, max_len: int | None = None, **overrides):
    """(family, ModelConfig, the config.json dict) of a model directory.

    overrides: ModelConfig fields that do not change the weights (dtype, remat, dropout, ...).
    """
    hf = read_config(directory)
    family, kw = configs.from_hf(hf, max_len)
    return family, ModelConfig(**{**kw, **overrides}), hf


def param_paths(cfg: ModelConfig) -> dict:
    """{lm params path tuple: shape} of an initialised model (eval_shape: no compute)."""
    from lm import models

    model = models.build_model(cfg)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), np.zeros((1, 1), np.int32))
    flat = jax.tree_util.tree_flatten_with_path(nn.unbox(shapes["params"]))[0]
    return {tuple(k.key for k in path): tuple(leaf.shape) for path, leaf in flat}


def _scanned(path: tuple) -> tuple[tuple, int | None]:
    """('decoder', 'layer_3', ...) -> (('decoder', 'layers', 'block_0', ...), 3): where layer i of
    a scan_layers model lives (stacked on a leading axis); other paths unchanged, None."""
    if len(path) > 1 and path[1].startswith("layer_"):
        return (path[0], "layers", "block_0") + path[2:], int(path[1][len("layer_"):])
    return path, None


def _table(family: str, cfg: ModelConfig):
    """(entries, shapes) of the per-layer table; scan_layers models are checked against their
    stacked parameters (one [L, ...] array per per-layer entry group)."""
    flat = dataclasses.replace(cfg, scan_layers=False)
    entries = weights.table(family, flat)
    shapes = _check_table(family, flat, entries)
    if cfg.scan_layers:
        if cfg.moe_every:
            raise configs.UnsupportedModel("scan_layers with MoE groups has no Hugging Face layout")
        stacked = param_paths(cfg)
        for path, shape in shapes.items():
            target, i = _scanned(path)
            want = shape if i is None else (cfg.num_layers,) + shape
            if stacked.get(target) != want:
                raise configs.UnsupportedModel(f"{family}: scanned parameter {target} is not {want}")
    return entries, shapes


def _check_table(family: str, cfg: ModelConfig, entries) -> dict:
    shapes = param_paths(cfg)
    have = {e.path for e in entries}
    if have != set(shapes):
        missing = sorted(set(shapes) - have)[:3]
        raise configs.UnsupportedModel(
            f"{family}: lm parameters {missing} have no Hugging Face tensor (MoE and "
            "encoder-decoder models are not importable / exportable)")
    return shapes


def _hf_shapes(entry, lm_shape) -> list:
    """The HF tensor shapes an entry expects (to_hf on a zero-stride stand-in: no memory)."""
    return [a.shape for a in entry.to_hf(np.broadcast_to(np.float32(0), lm_shape))]


def load_params(directory: str, family: str, cfg: ModelConfig, shardings=None):
    """The lm params pytree of a HF checkpoint directory.

    shardings: a pytree of jax.sharding.Sharding like the params (None: the default device).
    Errors (CheckpointError, a ValueError) name the missing or mis-shaped tensor.
    """
    store = SafetensorsDir(directory)
    entries, shapes = _table(family, cfg)
    available = set(store.names)
    used = set()
    resolved = []
    for entry in entries:  # all checks before any tensor is read
        names = []
        for name, want in zip(entry.hf, _hf_shapes(entry, shapes[entry.path])):
            stored = weights.resolve(name, family, available)
            if stored is None:
                raise CheckpointError(f"{directory}: tensor {name!r} is missing (a {family} model "
                                      f"with this config.json needs it)")
            if store.shape(stored) != tuple(want):
                raise CheckpointError(f"{directory}: tensor {stored!r} has shape "
                                      f"{list(store.shape(stored))}, config.json implies {list(want)}")
            names.append(stored)
        used.update(names)
        resolved.append((entry, names))
    extra = sorted(n for n in available - used if not n.endswith(IGNORED_SUFFIXES)
                   and not (cfg.tie_embeddings and n in ("lm_head.weight", "embed_out.weight")))
    if extra:
        raise CheckpointError(f"{directory}: tensor {extra[0]!r} is not used by a {family} model "
                              f"with this config.json ({len(extra)} unused); refusing a partial load")

    flat_shardings = {}
    if shardings is not None:
        leaves = jax.tree_util.tree_flatten_with_path(shardings)[0]
        flat_shardings = {tuple(k.key for k in path): s for path, s in leaves}
    groups: dict = {}  # lm path -> [(entry, names)], several (one per layer) when scanned
    for entry, names in resolved:
        path = _scanned(entry.path)[0] if cfg.scan_layers else entry.path
        groups.setdefault(path, []).append((entry, names))
    params: dict = {}
    for path, group in groups.items():
        arrays = [e.to_lm(*[_finite(store, n) for n in names]) for e, names in group]
        full = np.stack(arrays) if cfg.scan_layers and _scanned(group[0][0].path)[1] is not None \
            else arrays[0]
        del arrays
        sharding = flat_shardings.get(path)
        if sharding is None:
            leaf = jax.device_put(full)
        else:
            leaf = jax.make_array_from_callback(full.shape, sharding, lambda idx, a=full: a[idx])
        node = params
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = leaf
        del full
    return params


def _finite(store: SafetensorsDir, name: str) -> np.ndarray:
    """A tensor as float32; NaN/Inf weights are refused here (they would make every later
    command call the imported checkpoint damaged)."""
    array = np.asarray(store.read(name), np.float32)
    bad = array.size - int(np.count_nonzero(np.isfinite(array)))
    if bad:
        raise CheckpointError(f"{store.path_of(name)}: tensor {name!r} holds {bad} NaN/Inf values "
                              f"of {array.size}; refusing to import non-finite weights")
    return array


def export_tensors(params, family: str, cfg: ModelConfig):
    """{canonical HF tensor name: float32 numpy array}, one lm parameter at a time (a generator)."""
    entries, _ = _table(family, cfg)
    for entry in entries:
        path, layer = _scanned(entry.path) if cfg.scan_layers else (entry.path, None)
        node = params
        for key in path:
            node = node[key]
        value = np.asarray(jax.device_get(node), np.float32)
        arrays = entry.to_hf(value if layer is None else value[layer])
        for name, array in zip(entry.hf, arrays):
            yield name, np.ascontiguousarray(array)
