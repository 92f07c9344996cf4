"""One weight table per family: lm parameter <- Hugging Face tensor(s), and back.

Each `Entry` names an lm parameter path (as in the params pytree), the HF tensors it is made of
(canonical names, as `transformers` saves them), `to_lm` (HF arrays -> the lm array) and `to_hf`
(the lm array -> HF arrays, exactly inverse). Layouts (docs/DESIGN.md): torch Linear weights are
[out, in], GPT-2's Conv1D is [in, out]; lm keeps heads as an axis ([D, H, E], [H, E, D]), stacks
k/v as [D, 2, K, E] (q/k/v as [D, 3, H, E] when K = H) and SwiGLU's (gate, up) as [D, 2, F].
GPT-NeoX's fused query_key_value is per-head interleaved: rows [H, 3, E].
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from lm.config import ModelConfig
from lm.hf.configs import LLAMA_STYLE

PREFIX = {"llama": "model.", "mistral": "model.", "qwen2": "model.", "qwen3": "model.",
          "gpt2": "transformer.", "gpt_neox": "gpt_neox."}


@dataclasses.dataclass(frozen=True)
class Entry:
    path: tuple  # lm params path, e.g. ("decoder", "layer_0", "attn", "query")
    hf: tuple  # HF tensor names
    to_lm: Callable
    to_hf: Callable


def _same(name, path):
    return Entry(path, (name,), lambda x: x, lambda y: (y,))


def _linear(name, path, shape):
    """torch Linear [out, in] -> lm [in, *out_shape] (out split into e.g. heads x head_dim)."""
    return Entry(path, (name,), lambda w: w.T.reshape(shape),
                 lambda y: (y.reshape(shape[0], -1).T,))


def _linear_out(name, path, shape):
    """torch Linear [out, in] whose input is split, e.g. o_proj [D, H*E] -> lm [H, E, D]."""
    return Entry(path, (name,), lambda w: w.T.reshape(shape),
                 lambda y: (y.reshape(-1, shape[-1]).T,))


def _reshape(name, path, shape, hf_shape=(-1,)):
    return Entry(path, (name,), lambda x: x.reshape(shape), lambda y: (y.reshape(hf_shape),))


def _stack(names, path, shapes_in, axis):
    """Several torch Linears [out_i, in] -> lm [in, n, *out_shape] stacked on `axis`."""
    def to_lm(*ws):
        return np.stack([w.T.reshape(s) for w, s in zip(ws, shapes_in)], axis=axis)

    def to_hf(y):
        parts = np.moveaxis(y, axis, 0)
        return tuple(p.reshape(p.shape[0], -1).T for p in parts)

    return Entry(path, tuple(names), to_lm, to_hf)


def _stack_bias(names, path, shape):
    return Entry(path, tuple(names), lambda *bs: np.stack([b.reshape(shape) for b in bs]),
                 lambda y: tuple(p.reshape(-1) for p in y))


def _llama_layer(cfg: ModelConfig, i: int) -> list:
    d, h, k, e, f = cfg.d_model, cfg.num_heads, cfg.kv_heads, cfg.head_size, cfg.ff_size
    p = f"model.layers.{i}."
    lp = ("decoder", f"layer_{i}")
    out = [_same(p + "input_layernorm.weight", lp + ("attn_norm", "scale")),
           _same(p + "post_attention_layernorm.weight", lp + ("mlp_norm", "scale")),
           _linear_out(p + "self_attn.o_proj.weight", lp + ("attn", "out"), (h, e, d)),
           _stack([p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"], lp + ("mlp", "wi"),
                  [(d, f), (d, f)], axis=1),
           Entry(lp + ("mlp", "wo"), (p + "mlp.down_proj.weight",), lambda w: w.T, lambda y: (y.T,))]
    a = p + "self_attn."
    if k == h:  # lm fuses q, k, v into one [D, 3, H, E] projection
        out.append(_stack([a + "q_proj.weight", a + "k_proj.weight", a + "v_proj.weight"],
                          lp + ("attn", "qkv"), [(d, h, e)] * 3, axis=1))
        if cfg.qkv_bias:
            out.append(_stack_bias([a + "q_proj.bias", a + "k_proj.bias", a + "v_proj.bias"],
                                   lp + ("attn", "qkv_bias"), (h, e)))
    else:
        out.append(_linear(a + "q_proj.weight", lp + ("attn", "query"), (d, h, e)))
        out.append(_stack([a + "k_proj.weight", a + "v_proj.weight"], lp + ("attn", "kv"),
                          [(d, k, e)] * 2, axis=1))
        if cfg.qkv_bias:
            out.append(_reshape(a + "q_proj.bias", lp + ("attn", "query_bias"), (h, e)))
            out.append(_stack_bias([a + "k_proj.bias", a + "v_proj.bias"], lp + ("attn", "kv_bias"), (k, e)))
    if cfg.qk_norm:
        out += [_same(a + "q_norm.weight", lp + ("attn", "query_norm")),
                _same(a + "k_norm.weight", lp + ("attn", "key_norm"))]
    return out


def _layer_norms(prefix: str, layer: tuple, names) -> list:
    """LayerNorm weight and bias, as they are, for each (HF name, lm name) of a layer."""
    out = []
    for hf_name, lm_name in names:
        out += [_same(prefix + hf_name + ".weight", layer + (lm_name, "scale")),
                _same(prefix + hf_name + ".bias", layer + (lm_name, "bias"))]
    return out


def _gpt2_layer(cfg: ModelConfig, i: int) -> list:
    d, h, e = cfg.d_model, cfg.num_heads, cfg.head_size
    p = f"transformer.h.{i}."
    lp = ("decoder", f"layer_{i}")
    return _layer_norms(p, lp, (("ln_1", "attn_norm"), ("ln_2", "mlp_norm"))) + [  # Conv1D weights are [in, out]: reshapes only
        _reshape(p + "attn.c_attn.weight", lp + ("attn", "qkv"), (d, 3, h, e), (d, 3 * h * e)),
        _reshape(p + "attn.c_attn.bias", lp + ("attn", "qkv_bias"), (3, h, e)),
        Entry(lp + ("attn", "out"), (p + "attn.c_proj.weight",), lambda w: w.reshape(h, e, d),
              lambda y: (y.reshape(h * e, d),)),
        _same(p + "attn.c_proj.bias", lp + ("attn", "out_bias")),
        _same(p + "mlp.c_fc.weight", lp + ("mlp", "wi")), _same(p + "mlp.c_fc.bias", lp + ("mlp", "bi")),
        _same(p + "mlp.c_proj.weight", lp + ("mlp", "wo")), _same(p + "mlp.c_proj.bias", lp + ("mlp", "bo")),
    ]


def _neox_layer(cfg: ModelConfig, i: int) -> list:
    d, h, e = cfg.d_model, cfg.num_heads, cfg.head_size
    p = f"gpt_neox.layers.{i}."
    lp = ("decoder", f"layer_{i}")
    norms = _layer_norms(p, lp, (("input_layernorm", "attn_norm"), ("post_attention_layernorm", "mlp_norm")))
    # query_key_value rows are [H, 3, E] (per head: q, k, v), columns D.
    return norms + [
        Entry(lp + ("attn", "qkv"), (p + "attention.query_key_value.weight",),
              lambda w: w.reshape(h, 3, e, d).transpose(3, 1, 0, 2),
              lambda y: (y.transpose(2, 1, 3, 0).reshape(h * 3 * e, d),)),
        Entry(lp + ("attn", "qkv_bias"), (p + "attention.query_key_value.bias",),
              lambda b: b.reshape(h, 3, e).transpose(1, 0, 2),
              lambda y: (y.transpose(1, 0, 2).reshape(-1),)),
        _linear_out(p + "attention.dense.weight", lp + ("attn", "out"), (h, e, d)),
        _same(p + "attention.dense.bias", lp + ("attn", "out_bias")),
        Entry(lp + ("mlp", "wi"), (p + "mlp.dense_h_to_4h.weight",), lambda w: w.T, lambda y: (y.T,)),
        _same(p + "mlp.dense_h_to_4h.bias", lp + ("mlp", "bi")),
        Entry(lp + ("mlp", "wo"), (p + "mlp.dense_4h_to_h.weight",), lambda w: w.T, lambda y: (y.T,)),
        _same(p + "mlp.dense_4h_to_h.bias", lp + ("mlp", "bo")),
    ]


def _transpose(name, path):
    return Entry(path, (name,), lambda w: w.T, lambda y: (y.T,))


def table(family: str, cfg: ModelConfig) -> list:
    """Every lm parameter of `cfg` as an Entry of `family` (one entry per lm parameter)."""
    if family in LLAMA_STYLE:
        entries = [_same("model.embed_tokens.weight", ("embed", "embedding")),
                   _same("model.norm.weight", ("final_norm", "scale"))]
        if not cfg.tie_embeddings:
            entries.append(_transpose("lm_head.weight", ("unembed",)))
        layer = lambda i: _llama_layer(cfg, i)  # noqa: E731
    elif family == "gpt2":
        entries = [_same("transformer.wte.weight", ("embed", "embedding")),
                   _same("transformer.wpe.weight", ("pos_embed", "embedding")),
                   _same("transformer.ln_f.weight", ("final_norm", "scale")),
                   _same("transformer.ln_f.bias", ("final_norm", "bias"))]
        layer = lambda i: _gpt2_layer(cfg, i)  # noqa: E731
    else:
        entries = [_same("gpt_neox.embed_in.weight", ("embed", "embedding")),
                   _same("gpt_neox.final_layer_norm.weight", ("final_norm", "scale")),
                   _same("gpt_neox.final_layer_norm.bias", ("final_norm", "bias"))]
        if not cfg.tie_embeddings:
            entries.append(_transpose("embed_out.weight", ("unembed",)))
        layer = lambda i: _neox_layer(cfg, i)  # noqa: E731
    for i in range(cfg.num_layers):
        entries += layer(i)
    return entries


def resolve(name: str, family: str, available) -> str | None:
    """The stored name of a canonical tensor name: as is, or without the family's prefix
    (the original gpt2 checkpoints say `h.0.attn...`, not `transformer.h.0.attn...`)."""
    if name in available:
        return name
    prefix = PREFIX[family]
    if name.startswith(prefix) and name[len(prefix):] in available:
        return name[len(prefix):]
    return None
