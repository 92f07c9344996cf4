"""config.json <-> ModelConfig, per model family.

Families (HF model_type): llama-style decoders (llama, mistral, qwen2, qwen3; SmolLM2 is llama),
gpt2 and gpt_neox (Pythia). Both the newer `rope_parameters` and the older `rope_theta` /
`rope_scaling` / `rotary_pct` / `rotary_emb_base` keys are read. Anything a family can express
that lm's model cannot (an unsupported rope scaling, sliding window on only some layers, ...)
is an error naming the key, never a silent approximation.
"""

from __future__ import annotations

from lm.config import ConfigError, ModelConfig

LLAMA_STYLE = ("llama", "mistral", "qwen2", "qwen3")
FAMILIES = LLAMA_STYLE + ("gpt2", "gpt_neox")
ARCHITECTURES = {
    "LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral", "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3", "GPT2LMHeadModel": "gpt2", "GPTNeoXForCausalLM": "gpt_neox",
}
ARCHITECTURE_OF = {family: arch for arch, family in ARCHITECTURES.items()}
DEFAULT_MAX_LEN = 2048  # rope models: the training / eval context unless --max_len says otherwise
# HF activation names -> lm's mlp for the plain (non-gated) MLP.
GELUS = {"gelu": "gelu_exact", "gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "gelu_fast": "gelu"}


class UnsupportedModel(ConfigError):
    """A config.json lm cannot run exactly (the message names the key or architecture)."""


def family_of(hf: dict) -> str:
    """The family of a config.json dict, or UnsupportedModel listing the supported ones."""
    model_type = hf.get("model_type")
    if model_type in FAMILIES:
        return model_type
    archs = hf.get("architectures") or []
    for arch in archs:
        if arch in ARCHITECTURES:
            return ARCHITECTURES[arch]
    named = model_type or (archs[0] if archs else "unknown")
    raise UnsupportedModel(f"unsupported architecture {named!r} (model_type {model_type!r}, "
                           f"architectures {archs}); supported: {', '.join(sorted(ARCHITECTURES))}")


def _rope(hf: dict, family: str) -> dict:
    """rope_base, scaling and partial rotary from either generation of config keys."""
    params = dict(hf.get("rope_parameters") or {})
    old = dict(hf.get("rope_scaling") or {})
    theta = params.get("rope_theta", hf.get("rope_theta", hf.get("rotary_emb_base", 10000.0)))
    kind = params.get("rope_type") or params.get("type") or old.get("rope_type") or old.get("type")
    scaling = {**old, **params}
    out = {"rope_base": float(theta)}
    fraction = scaling.get("partial_rotary_factor", hf.get("partial_rotary_factor",
                                                           hf.get("rotary_pct", 1.0)))
    out["rotary_fraction"] = float(fraction)
    if kind in (None, "default"):
        return out
    if kind == "linear":
        return {**out, "rope_scaling": "linear", "rope_factor": float(scaling["factor"])}
    if kind == "llama3":
        return {**out, "rope_scaling": "llama3", "rope_factor": float(scaling["factor"]),
                "rope_low_freq_factor": float(scaling["low_freq_factor"]),
                "rope_high_freq_factor": float(scaling["high_freq_factor"]),
                "rope_original_max_len": int(scaling["original_max_position_embeddings"])}
    raise UnsupportedModel(f"config.json: rope scaling type {kind!r} is not supported "
                           "(supported: default, linear, llama3)")


def _max_len(hf_positions: int | None, max_len: int | None) -> int:
    limit = hf_positions or DEFAULT_MAX_LEN
    if max_len:
        if max_len > limit:
            raise ConfigError(f"max_len={max_len} exceeds the model's max_position_embeddings={limit}")
        return int(max_len)
    return int(min(limit, DEFAULT_MAX_LEN))


def from_hf(hf: dict, max_len: int | None = None) -> tuple[str, dict]:
    """(family, ModelConfig keyword arguments) of a config.json dict.

    max_len: the context lm trains / evaluates at (rope models: at most
    max_position_embeddings, default min(that, 2048)); learned positions (gpt2) keep the table's
    n_positions.
    """
    family = family_of(hf)
    if family in LLAMA_STYLE:
        kw = _llama(hf, family)
        kw["max_len"] = _max_len(hf.get("max_position_embeddings"), max_len)
    elif family == "gpt2":
        kw = _gpt2(hf)
        if max_len and max_len != kw["max_len"]:
            raise ConfigError(f"max_len={max_len}: gpt2 has learned positions for exactly "
                              f"n_positions={kw['max_len']} tokens")
    else:
        kw = _gpt_neox(hf)
        kw["max_len"] = _max_len(hf.get("max_position_embeddings"), max_len)
    ModelConfig(**kw)  # validates
    return family, kw


def _llama(hf: dict, family: str) -> dict:
    if hf.get("hidden_act", "silu") != "silu":
        raise UnsupportedModel(f"config.json: hidden_act={hf['hidden_act']!r} (lm's gated MLP is SwiGLU: silu)")
    if hf.get("attention_bias") or hf.get("mlp_bias"):
        raise UnsupportedModel("config.json: attention_bias / mlp_bias on llama-style models are "
                               "not supported (only Qwen2's q/k/v biases are)")
    heads = int(hf["num_attention_heads"])
    kw = dict(vocab_size=int(hf["vocab_size"]), d_model=int(hf["hidden_size"]),
              num_layers=int(hf["num_hidden_layers"]), num_heads=heads,
              num_kv_heads=int(hf.get("num_key_value_heads") or heads),
              head_dim=int(hf.get("head_dim") or hf["hidden_size"] // heads),
              d_ff=int(hf["intermediate_size"]), position="rope", norm="rmsnorm", mlp="swiglu",
              use_bias=False, tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
              norm_eps=float(hf.get("rms_norm_eps", 1e-6)), qkv_bias=family == "qwen2",
              qk_norm=family == "qwen3", **_rope(hf, family))
    if family in ("qwen2", "qwen3") and hf.get("use_sliding_window"):
        raise UnsupportedModel(f"config.json: use_sliding_window=true ({family} windows only some "
                               "layers); lm applies one window to every layer")
    if family == "mistral" and hf.get("sliding_window"):
        kw["sliding_window"] = int(hf["sliding_window"])
    return kw


def _gpt2(hf: dict) -> dict:
    act = hf.get("activation_function", "gelu_new")
    if act not in GELUS:
        raise UnsupportedModel(f"config.json: activation_function={act!r}; supported: {sorted(GELUS)}")
    if hf.get("scale_attn_by_inverse_layer_idx") or hf.get("scale_attn_weights") is False:
        raise UnsupportedModel("config.json: gpt2 attention scaling other than 1/sqrt(head_dim) "
                               "is not supported")
    d = int(hf["n_embd"])
    return dict(vocab_size=int(hf["vocab_size"]), max_len=int(hf["n_positions"]), d_model=d,
                num_layers=int(hf["n_layer"]), num_heads=int(hf["n_head"]),
                d_ff=int(hf.get("n_inner") or 4 * d), position="learned", norm="layernorm",
                mlp=GELUS[act], use_bias=True, tie_embeddings=True,
                norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)))


def _gpt_neox(hf: dict) -> dict:
    act = hf.get("hidden_act", "gelu")
    if act not in GELUS:
        raise UnsupportedModel(f"config.json: hidden_act={act!r}; supported: {sorted(GELUS)}")
    if hf.get("attention_bias") is False:
        raise UnsupportedModel("config.json: gpt_neox attention_bias=false is not supported")
    return dict(vocab_size=int(hf["vocab_size"]), d_model=int(hf["hidden_size"]),
                num_layers=int(hf["num_hidden_layers"]), num_heads=int(hf["num_attention_heads"]),
                d_ff=int(hf["intermediate_size"]), position="rope", norm="layernorm",
                mlp=GELUS[act], use_bias=True, tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
                norm_eps=float(hf.get("layer_norm_eps", 1e-5)),
                parallel_residual=bool(hf.get("use_parallel_residual", True)), **_rope(hf, "gpt_neox"))


# ----------------------------------------------------------------------------- lm -> HF

def family_for(cfg: ModelConfig) -> str:
    """The HF family that can hold this model exactly, or UnsupportedModel saying why none can."""
    def need(ok, why):
        if not ok:
            raise UnsupportedModel(f"no Hugging Face family holds this model: {why}")

    need(cfg.kind == "decoder", f"model.kind={cfg.kind!r} (only decoders export)")
    need(cfg.kernel == "exp" and cfg.kernel_scale in (0.0, cfg.head_size ** -0.5),
         f"model.kernel={cfg.kernel!r}, kernel_scale={cfg.kernel_scale} (softmax at 1/sqrt(E) only)")
    need(not cfg.moe_every, "mixture-of-experts layers")
    need(cfg.pre_norm, "post-LN blocks (pre_norm=False)")
    if cfg.norm == "rmsnorm" and cfg.mlp == "swiglu" and cfg.position == "rope" and not cfg.use_bias:
        need(not cfg.parallel_residual and cfg.rotary_fraction == 1.0,
             "llama-style models have sequential residuals and full rotary")
        need(not (cfg.qk_norm and cfg.qkv_bias) and not (cfg.sliding_window and (cfg.qk_norm or cfg.qkv_bias)),
             "qk_norm, qkv_bias and sliding_window are each in a different family")
        return "qwen3" if cfg.qk_norm else "qwen2" if cfg.qkv_bias else (
            "mistral" if cfg.sliding_window else "llama")
    gelu = cfg.mlp in ("gelu", "gelu_exact")
    need(cfg.norm == "layernorm" and gelu and cfg.use_bias and not cfg.qk_norm and not cfg.sliding_window,
         "llama-style needs rmsnorm + swiglu + rope + no biases; gpt2 / gpt_neox need layernorm + "
         "gelu + biases")
    if cfg.position == "learned":
        need(cfg.tie_embeddings and not cfg.parallel_residual, "gpt2 ties embeddings, sequential residual")
        return "gpt2"
    need(cfg.position == "rope" and cfg.rope_scaling == "none", "gpt_neox needs unscaled rope")
    return "gpt_neox"


def to_hf(cfg: ModelConfig, family: str, base: dict | None = None, eos_id: int | None = None) -> dict:
    """config.json for `cfg` as `family` (values from `base`, the imported config.json, kept
    where lm has no say, e.g. token ids; without one, bos = eos = the tokenizer's `eos_id`, so
    that no family default points outside the vocabulary)."""
    out = dict(base or {"bos_token_id": eos_id, "eos_token_id": eos_id})
    dtype_key = "torch_dtype" if "torch_dtype" in out else "dtype"  # transformers < 5 / >= 5
    out.update(architectures=[ARCHITECTURE_OF[family]], model_type=family, vocab_size=cfg.vocab_size)
    out[dtype_key] = "float32"
    if family in LLAMA_STYLE:
        out.update(hidden_size=cfg.d_model, intermediate_size=cfg.ff_size,
                   num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
                   num_key_value_heads=cfg.kv_heads, head_dim=cfg.head_size, hidden_act="silu",
                   rms_norm_eps=cfg.norm_eps, tie_word_embeddings=cfg.tie_embeddings,
                   max_position_embeddings=max(cfg.max_len, out.get("max_position_embeddings", 0)),
                   rope_parameters=_rope_parameters(cfg, out.get("rope_parameters")))
        out.pop("rope_theta", None), out.pop("rope_scaling", None)
        if base and "head_dim" not in base and cfg.head_size * cfg.num_heads == cfg.d_model:
            del out["head_dim"]  # older configs leave the default out
        if family == "mistral":
            out["sliding_window"] = cfg.sliding_window or None
        if family in ("qwen2", "qwen3"):
            out["use_sliding_window"] = False
        if family == "llama":
            out.update(attention_bias=False, mlp_bias=False)
    elif family == "gpt2":
        act = out.get("activation_function") if GELUS.get(out.get("activation_function")) == cfg.mlp else None
        out.update(n_embd=cfg.d_model, n_layer=cfg.num_layers, n_head=cfg.num_heads,
                   n_positions=cfg.max_len, n_inner=None if cfg.ff_size == 4 * cfg.d_model else cfg.ff_size,
                   activation_function=act or ("gelu_new" if cfg.mlp == "gelu" else "gelu"),
                   layer_norm_epsilon=cfg.norm_eps, tie_word_embeddings=True)
    else:
        act = out.get("hidden_act") if GELUS.get(out.get("hidden_act")) == cfg.mlp else None
        out.update(hidden_size=cfg.d_model, intermediate_size=cfg.ff_size,
                   num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
                   hidden_act=act or ("gelu" if cfg.mlp == "gelu_exact" else "gelu_new"),
                   layer_norm_eps=cfg.norm_eps, use_parallel_residual=cfg.parallel_residual,
                   tie_word_embeddings=cfg.tie_embeddings, attention_bias=True,
                   max_position_embeddings=max(cfg.max_len, out.get("max_position_embeddings", 0)),
                   rope_parameters=_rope_parameters(cfg, out.get("rope_parameters")))
        for old in ("rotary_pct", "rotary_emb_base", "rope_theta", "rope_scaling"):
            out.pop(old, None)
    return out


def _rope_parameters(cfg: ModelConfig, base: dict | None) -> dict:
    out = {"rope_theta": cfg.rope_base, "rope_type": "default" if cfg.rope_scaling == "none"
           else cfg.rope_scaling}
    if cfg.rotary_fraction != 1.0 or (base or {}).get("partial_rotary_factor") is not None:
        out["partial_rotary_factor"] = cfg.rotary_fraction
    if cfg.rope_scaling in ("linear", "llama3"):
        out["factor"] = cfg.rope_factor
    if cfg.rope_scaling == "llama3":
        out.update(low_freq_factor=cfg.rope_low_freq_factor, high_freq_factor=cfg.rope_high_freq_factor,
                   original_max_position_embeddings=cfg.rope_original_max_len)
    return out
