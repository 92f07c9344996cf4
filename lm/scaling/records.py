"""What a scaling fit reads from a run record: N, D, the schedule and the eval curve.

New records store `num_params_nonembed` (N), `tokens` (D = steps x batch x seq_len) and
`schedule` {name, warmup_steps, steps, min_lr_ratio} (written by `record_fields` at the end of
`lm run`). Older records lack them; `n_params`, `tokens` and `schedule` then derive them from
the stored config, `tokens_seen` and `flops_per_token` (the inverse of lm.models.flops_per_token:
6N + 12 L T d + 6 d V), so every archived run can still be fitted.
"""

from __future__ import annotations

import math


def finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def schedule_of(train: dict) -> dict:
    return dict(name=str(train.get("schedule", "cosine")), warmup_steps=int(train.get("warmup_steps", 0)),
                steps=int(train.get("steps", 0)), min_lr_ratio=float(train.get("min_lr_ratio", 0.0)))


def record_fields(config, summary: dict, vocab_size: int | None) -> dict:
    """The fit fields of a finished run (config: the resolved ConfigDict)."""
    out = dict(tokens=summary.get("tokens_seen"), schedule=schedule_of(config.train.to_dict()),
               num_params_nonembed=None)
    try:  # lazily: jax/flax are loaded anyway after training
        import dataclasses

        from lm.hf.pretrained import run_model_config
        from lm.models import nonembed_params

        m = run_model_config(config)  # init_from: the pretrained model's architecture
        if vocab_size:
            m = dataclasses.replace(m, vocab_size=int(vocab_size))
        out["num_params_nonembed"] = int(round(nonembed_params(m)))
    except Exception:  # a model change must not lose a finished run; derived on read instead
        pass
    return out


def n_params(rec: dict) -> float | None:
    """Non-embedding parameters N: stored, else inverted from flops_per_token and the config."""
    n = rec.get("num_params_nonembed")
    if finite(n) and n > 0:
        return float(n)
    fpt, m = rec.get("flops_per_token"), (rec.get("config") or {}).get("model") or {}
    vocab = rec.get("vocab_size") or m.get("vocab_size")
    if not (finite(fpt) and vocab and m.get("d_model") and m.get("num_heads")):
        return None
    head = m.get("head_dim") or m["d_model"] // m["num_heads"]
    layers = m.get("num_layers", 0)
    if m.get("kind") == "encoder_decoder":
        layers = (m.get("num_encoder_layers") or layers) + 2 * layers
    n = (fpt - 12.0 * layers * m["max_len"] * m["num_heads"] * head - 6.0 * m["d_model"] * vocab) / 6.0
    return n if n > 0 else None


def tokens(rec: dict) -> float | None:
    """Training tokens D."""
    d = rec.get("tokens", rec.get("tokens_seen"))
    return float(d) if finite(d) and d > 0 else None


def schedule(rec: dict) -> dict:
    s = rec.get("schedule")
    if isinstance(s, dict) and s.get("name"):
        return s
    return schedule_of(((rec.get("config") or {}).get("train")) or {})


def required_context(rec: dict) -> int:
    """experiment.min_context, or order + 1 for a Markov source (a k-th order chain needs k
    symbols of context to reach its entropy rate)."""
    cfg = rec.get("config") or {}
    need = int((cfg.get("experiment") or {}).get("min_context") or 0)
    data = cfg.get("data") or {}
    if data.get("source") == "markov":
        need = max(need, int(data.get("markov_order", 0)) + 1)
    return need


def incapable(rec: dict) -> str | None:
    """Why a rung structurally cannot meet the criterion (None: it can)."""
    need = required_context(rec)
    have = ((rec.get("config") or {}).get("model") or {}).get("max_len")
    if need and finite(have) and have < need:
        return f"context {have} is shorter than the {need} tokens the task needs"
    return None


def target_of(config, parent: dict, compute: float | None) -> dict | None:
    """{n, d, compute} of a run about to start (a rerun's prediction target); None if unknown."""
    fields = record_fields(config, {}, parent.get("vocab_size"))
    t = config.train
    d = float(t.steps * t.batch_size * t.grad_accum * config.model.max_len)
    if not fields["num_params_nonembed"]:
        return None
    return dict(n=float(fields["num_params_nonembed"]), d=d, compute=compute)
