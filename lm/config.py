"""Configuration: one base ConfigDict that every experiment file starts from.

Experiment files (big_vision style) call `base_config()`, override what they need and
return it from `get_config(arg)`. The dict is locked, so a misspelt key, in a file or on
the command line (`--config.train.stepz=5`), is an error rather than a silent no-op.

The model section is turned into a frozen, validated `ModelConfig` dataclass by
`model_config(config)`; model code only ever sees that dataclass.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import ml_collections

KERNELS = ("exp", "rbf", "linear", "performer")
POSITIONS = ("learned", "rope", "none")
NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "gelu_exact", "swiglu")  # gelu is the tanh form (GPT-2); gelu_exact erf (GPT-NeoX)
ROPE_SCALINGS = ("none", "linear", "llama3")
REMAT_POLICIES = ("none", "full", "dots")
DTYPES = ("auto", "float32", "bfloat16")  # auto: bfloat16 on GPU / TPU, float32 on CPU
ATTENTION_IMPLS = ("auto", "xla", "cudnn", "splash", "einsum")  # see lm.fast_attention
MODEL_KINDS = ("decoder", "encoder_decoder")
INIT_SCHEMES = ("default", "nanogpt")


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the key."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Every architectural choice of a model. Dimension letters as in docs/DESIGN.md."""

    kind: str = "decoder"  # decoder (Alg 10) | encoder_decoder (Alg 8)
    vocab_size: int = 256  # V; filled in from the tokenizer by the trainer
    max_len: int = 128  # T, the context length
    d_model: int = 128  # D
    num_layers: int = 4  # decoder layers (the only stack of a decoder-only model)
    num_encoder_layers: int = 0  # encoder layers (encoder_decoder); 0 means num_layers
    num_heads: int = 4  # H
    num_kv_heads: int = 0  # K; 0 means num_heads (plain multi-head), 1 is multi-query
    head_dim: int = 0  # E; 0 means d_model // num_heads
    d_ff: int = 0  # F; 0 means 4 * d_model (gelu) or a multiple of 8 near 8/3 d_model (swiglu)
    # Attention as a kernel smoother.
    kernel: str = "exp"  # exp | rbf | linear | performer
    kernel_scale: float = 0.0  # 1/bandwidth multiplying q.k (exp, rbf: 1/tau); 0 means 1/sqrt(E)
    performer_features: int = 64  # random features per head (performer)
    # Positions, norms, MLP.
    position: str = "learned"  # learned | rope | none
    rope_base: float = 10000.0
    norm: str = "layernorm"  # layernorm | rmsnorm
    pre_norm: bool = True  # pre-LN (default) or post-LN
    mlp: str = "gelu"  # gelu (tanh approximation) | gelu_exact (erf) | swiglu
    use_bias: bool = True
    # Knobs that pretrained families need (lm.hf); the defaults are lm's original behaviour.
    norm_eps: float = 1e-6  # added to the variance in layer / RMS norms (HF: 1e-5 for most)
    qkv_bias: bool = False  # biases on the q/k/v projections even when use_bias is off (Qwen2)
    rope_scaling: str = "none"  # none | linear | llama3 (Llama 3.1 frequency-dependent scaling)
    rope_factor: float = 1.0  # linear / llama3: positions (low frequencies) stretched this much
    rope_low_freq_factor: float = 1.0  # llama3: wavelengths above orig_len / this are divided by factor
    rope_high_freq_factor: float = 4.0  # llama3: wavelengths below orig_len / this are kept
    rope_original_max_len: int = 8192  # llama3: the context the model was first trained at
    rotary_fraction: float = 1.0  # rope on the first fraction of each head's dims (GPT-NeoX: 0.25)
    parallel_residual: bool = False  # x + attn(norm1(x)) + mlp(norm2(x)) (GPT-NeoX, GPT-J)
    qk_norm: bool = False  # RMS norm on each head's queries and keys before rope (Qwen3)
    sliding_window: int = 0  # each query sees at most this many keys, itself included (0: all)
    dropout: float = 0.0
    tie_embeddings: bool = True
    # Mixture of experts: replaces the dense MLP in every moe_every-th layer (0 = off).
    moe_every: int = 0
    num_experts: int = 8
    moe_top_k: int = 2
    moe_capacity_factor: float = 1.25
    moe_aux_weight: float = 0.01
    # Compilation and numerics.
    scan_layers: bool = False
    remat: str = "none"  # none | full | dots
    dtype: str = "auto"  # compute dtype (lm.precision); parameters are always float32
    attention_impl: str = "auto"  # auto | xla | cudnn | splash | einsum (lm.fast_attention)
    # default: normal(0.02), learned positions 0.01; nanogpt: positions 0.02 too (both scale
    # residual projections by 1/sqrt(2 * layers), GPT-2 style): lm.layers.PositionEmbed.
    init_scheme: str = "default"

    def __post_init__(self):
        def need(ok, key, msg):
            if not ok:
                raise ConfigError(f"model.{key}: {msg}")

        need(self.kind in MODEL_KINDS, "kind", f"{self.kind!r} is not one of {MODEL_KINDS}")
        need(self.kernel in KERNELS, "kernel", f"unknown kernel {self.kernel!r}; choose from {KERNELS}")
        need(self.position in POSITIONS, "position", f"{self.position!r} is not one of {POSITIONS}")
        need(self.norm in NORMS, "norm", f"{self.norm!r} is not one of {NORMS}")
        need(self.mlp in MLPS, "mlp", f"{self.mlp!r} is not one of {MLPS}")
        need(self.remat in REMAT_POLICIES, "remat", f"{self.remat!r} is not one of {REMAT_POLICIES}")
        need(self.dtype in DTYPES, "dtype", f"{self.dtype!r} is not one of {DTYPES}")
        need(self.attention_impl in ATTENTION_IMPLS, "attention_impl",
             f"{self.attention_impl!r} is not one of {ATTENTION_IMPLS}")
        need(self.init_scheme in INIT_SCHEMES, "init_scheme",
             f"{self.init_scheme!r} is not one of {INIT_SCHEMES}")
        for key in ("vocab_size", "max_len", "d_model", "num_layers", "num_heads"):
            need(getattr(self, key) > 0, key, f"must be positive, got {getattr(self, key)}")
        need(self.d_model % self.num_heads == 0 or self.head_dim > 0, "num_heads",
             f"{self.num_heads} heads do not divide d_model={self.d_model} (or set model.head_dim)")
        need(self.num_heads % self.kv_heads == 0, "num_kv_heads",
             f"{self.kv_heads} kv heads do not divide num_heads={self.num_heads}")
        need(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")
        need(self.norm_eps > 0, "norm_eps", f"must be positive, got {self.norm_eps}")
        need(self.rope_scaling in ROPE_SCALINGS, "rope_scaling",
             f"{self.rope_scaling!r} is not one of {ROPE_SCALINGS}")
        need(self.rope_factor > 0, "rope_factor", f"must be positive, got {self.rope_factor}")
        if self.rope_scaling == "llama3":
            need(0 < self.rope_low_freq_factor < self.rope_high_freq_factor, "rope_low_freq_factor",
                 f"llama3 needs 0 < rope_low_freq_factor < rope_high_freq_factor, got "
                 f"{self.rope_low_freq_factor} and {self.rope_high_freq_factor}")
            need(self.rope_original_max_len > 0, "rope_original_max_len", "must be positive")
        need(0 < self.rotary_fraction <= 1, "rotary_fraction",
             f"must be in (0, 1], got {self.rotary_fraction}")
        need(self.position != "rope" or (self.rotary_dims > 0 and self.rotary_dims % 2 == 0),
             "rotary_fraction", f"rope needs an even, positive number of rotated dims; "
             f"{self.rotary_fraction} of head dim {self.head_size} is {self.rotary_dims}")
        need(not self.parallel_residual or (self.pre_norm and self.kind == "decoder"),
             "parallel_residual", "needs pre_norm=True and kind='decoder' (each branch reads "
             "its own norm of the same input)")
        need(self.sliding_window >= 0, "sliding_window", f"must be >= 0, got {self.sliding_window}")
        need(self.kernel_scale >= 0, "kernel_scale", f"must be >= 0, got {self.kernel_scale}")
        need(self.performer_features > 0, "performer_features", "must be positive")
        if self.moe_every:
            need(self.moe_every > 0, "moe_every", "must be >= 0")
            need(0 < self.moe_top_k <= self.num_experts, "moe_top_k",
                 f"must be in 1..num_experts={self.num_experts}, got {self.moe_top_k}")
            need(self.moe_capacity_factor > 0, "moe_capacity_factor", "must be positive")

    # Derived sizes: the one place where the "0 means default" rules live.
    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def head_size(self) -> int:
        return self.head_dim or self.d_model // self.num_heads

    @property
    def ff_size(self) -> int:
        if self.d_ff:
            return self.d_ff
        if self.mlp == "swiglu":  # keeps parameters equal to a 4x GELU MLP
            return 8 * ((8 * self.d_model // 3 + 7) // 8)
        return 4 * self.d_model

    @property
    def rotary_dims(self) -> int:
        """Dims of each head that rope rotates (HF: int(head_dim * rotary_pct))."""
        return int(self.head_size * self.rotary_fraction)

    @property
    def encoder_layers(self) -> int:
        return self.num_encoder_layers or self.num_layers

    @property
    def scale(self) -> float:
        return self.kernel_scale or self.head_size ** -0.5


def base_config() -> ml_collections.ConfigDict:
    """Every key the project knows, with defaults. Experiment files override these."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.model = dataclasses.asdict(ModelConfig())

    c.data = _data_defaults()
    c.train = _train_defaults()

    # Start from a pretrained model: hf:ORG/NAME, a Hugging Face model directory or an lm workdir
    # ('' = train from scratch). It fixes the architecture and tokenizer (lm/hf/pretrained.py).
    c.init_from = ""

    # Task evaluations at every eval (lm/evals): history keys eval_task/<task>/<metric>.
    c.evals = dict(
        tasks="",  # comma-separated task names (lm/evals/tasks.py), e.g. "addition_3,copy_8"
        num_examples=64,  # examples per task
        num_fewshot=0,  # solved demonstrations before each prompt
        seed=0,  # seeds the eval examples (the training corpus uses other streams) and the samples
        sample_temperature=0.0,  # > 0: answers also sampled at this temperature (sampled_* metrics)
    )

    # Mesh axis sizes; one may be -1 to take the remaining devices.
    # allow_subset: a mesh that leaves accelerators idle is an error unless this is set.
    c.mesh = dict(data=-1, fsdp=1, tensor=1, allow_subset=False)
    c.experiment = _experiment_defaults()
    c.lock()
    return c


def _data_defaults() -> dict:
    return dict(
        source="stdlib",  # stdlib | tinyshakespeare | enwik8 | files | hf | markov | copy | tasks | sft | preference
        path="",  # local file, directory or glob (files); local copy of a named corpus
        mixture="",  # files only: 'PATH@WEIGHT;PATH@WEIGHT' (instead of path): weighted train rows
        data_dir="",  # cache for downloads; '' means $LM_DATA_DIR or ~/.cache/lm
        hf_name="", hf_config="", text_field="text",  # Hugging Face hub datasets (online only)
        tokenizer="byte",  # byte | char | sentencepiece
        vocab_size=0,  # sentencepiece vocabulary size
        tokenizer_sample_chars=2_000_000,  # sentencepiece trains on this many characters, drawn across the corpus
        # The on-disk token store (lm/data/store.py) every text source is tokenized into once.
        store_dir="",  # '' means DATA_DIR/store
        store_dtype="auto",  # auto (uint16 when the vocabulary fits, else uint32) | uint16 | uint32
        shard_tokens=50_000_000,  # tokens per shard file
        store_verify=False,  # sha256 of every shard on each open (else: sizes, and sha256 of small or touched stores)
        document_masking=False,  # segment ids keep attention inside a document
        # Synthetic sources with an exact entropy rate / a known answer.
        markov_order=2, markov_vocab=8, markov_concentration=0.5, markov_seed=0,
        copy_vocab=16, copy_prefix_len=16,
        tasks="",  # source=tasks: comma-separated lm/evals/tasks.py names mixed into one corpus
        train_tokens=1_000_000, eval_tokens=100_000,
        # packed_epochs: shuffled rows of each epoch, eval on the whole split in order;
        # random_windows (nanoGPT): train rows start anywhere, uniformly; eval is
        # train.eval_batches batches of fixed random windows (0 = the whole split in order).
        sampling="packed_epochs",
        # Post-training examples (data.source=sft | preference; lm/data/pairs.py).
        prompt_field="prompt", response_field="response", chosen_field="chosen",
        rejected_field="rejected", template="plain",  # plain | chat
    )


def _train_defaults() -> dict:
    return dict(
        steps=1000,
        batch_size=32,  # global, in sequences
        grad_accum=1,
        objective="next_token",  # lm/objectives: next_token | prefix_lm (encoder_decoder) | dpo | rpo
        dpo_beta=0.1, dpo_label_smoothing=0.0,  # dpo, rpo: strength of the KL anchor; conservative DPO
        rpo_alpha=1.0,  # rpo: weight of the chosen answer's NLL per token beside the DPO loss
        learning_rate=1e-3,
        warmup_steps=100,
        schedule="cosine",  # cosine | linear | constant | wsd (warmup, stable, linear cooldown)
        cooldown_fraction=0.2,  # wsd: the last fraction of the steps decays to min_lr_ratio
        optimizer="adamw",  # adamw | muon (block matrices; AdamW on embeddings, norms, biases)
        muon_learning_rate=0.02, muon_momentum=0.95,  # muon: peak lr of the matrices, beta
        min_lr_ratio=0.1,
        weight_decay=0.1,
        decay_mask="matrices",  # matrices | nanogpt (every >=2-D param: + embeddings) | all (+ norms, biases)
        b1=0.9, b2=0.99, eps=1e-8,
        grad_clip=1.0,
        z_loss=0.0,
        loss_chunk=0,  # > 0: LM head + loss this many positions at a time, no [B,T,V] f32 logits (lm/chunked_loss.py)
        log_every=50,
        eval_every=250,
        eval_batches=20,  # 0 means the whole split
        checkpoint_every=500,
        keep_checkpoints=2,
        sample_tokens=200,  # printed at the end of `lm train`; 0 turns it off
        sample_prompt="",
        # Optional trackers beside TensorBoard and metrics.jsonl (lm/trackers.py): "wandb", "mlflow".
        trackers=(), tracker_project="lm", tracker_run_name="", tracking_uri="",
        compilation_cache_dir="",  # persistent XLA cache ('' : $LM_COMPILATION_CACHE_DIR or none)
    )


def _experiment_defaults() -> dict:
    return dict(
        name="",
        hypothesis="",
        metric="", comparator="<=", threshold=0.0, split="valid",
        rung="",
        # ((rung, ((dotted.key, value), ...)), ...) ordered by scale: tuples, because a ConfigDict
        # sorts its keys and rejects dotted ones. Build it with lm.experiment.ladder(tiny={...}, ...).
        ladder=(),
        # Shortest model.max_len that can solve the task at all: shorter rungs are inconclusive
        # and left out of scaling fits (Markov sources add order + 1 on their own).
        min_context=0,
    )


def model_config(config: ml_collections.ConfigDict) -> ModelConfig:
    """The validated model dataclass of a full config."""
    values = config.model.to_dict() if hasattr(config.model, "to_dict") else dict(config.model)
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown model key(s) {unknown}; known keys: {sorted(known)}")
    return ModelConfig(**values)


def config_hash(config: ml_collections.ConfigDict) -> str:
    """A short stable hash of a resolved config (experiment records use it)."""
    text = json.dumps(config.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def set_dotted(config: ml_collections.ConfigDict, key: str, value) -> None:
    """config['a.b.c'] = value, with an error naming the key if it does not exist."""
    *parents, leaf = key.split(".")
    node = config
    for i, part in enumerate(parents):
        if part not in node:
            raise ConfigError(f"unknown config key {'.'.join(parents[:i + 1])!r} (in {key!r})")
        node = node[part]
    if leaf not in node:
        raise ConfigError(f"unknown config key {key!r}")
    node[leaf] = value
