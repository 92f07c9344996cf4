"""Generation with a KV cache (Phuong & Hutter Alg 14, inference with temperature).

Decoder-only: one prefill call runs the whole prompt through the model with decode=True
(filling every layer's key/value cache), then a jitted `lax.while_loop` feeds one token at a
time, each step attending to the cache instead of recomputing the prefix.

Encoder-decoder: the prompt is the source and the decoder continues it, as in the prefix_lm
training objective (lm/objectives/language.py), where the encoder reads x_0..x_{h-1} and the decoder
reads x_h.. with x_h as its start token: here the source is prompt[:-1] and the decoder starts
from prompt[-1] (a one-token prompt is both the source and the start token). The encoder runs
once; each layer's cross-attention caches the projected source.

Sampling: logits / temperature, then top-k, then nucleus (top-p) filtering, then a categorical
draw with key fold_in(PRNGKey(seed), step) -- so a seed fixes the output, and the cached and
recomputing paths draw the same numbers. temperature=0 is greedy (argmax); top_k=1 is greedy
too. Ties at the top-k / top-p threshold are all kept.

Context limit: a model with context model.max_len can hold prompt + new tokens <= max_len
(decoder-only) or 1 + new <= max_len decoder positions (encoder-decoder, source <= max_len).
Asking for more raises ValueError with strict=True; otherwise generation stops at the limit
with stop_reason 'context' and a message saying so. With slide=True (decoder-only; `lm sample`
uses it) generation goes on past the context as nanoGPT's does, conditioning on the most recent
tokens: when the cache is full, the last max_len // 2 tokens are prefilled again and decoding
continues, so every new token sees at least max_len // 2 tokens of context (a prompt longer
than the context is cut to its last max_len - 1 tokens). One call makes at most MAX_NEW_TOKENS
(a bound, not a stream: more is refused up front rather than decoded for hours in silence).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax.core import meta

from lm import models

STOP_REASONS = ("max_new_tokens", "eos", "context")
# The most new tokens one call makes (past the context, the window slides): about 4 MB of text.
MAX_NEW_TOKENS = 1_000_000


class Generation(NamedTuple):
    """tokens [B, N]: new tokens (a row that stopped at EOS is padded with eos_id after it);
    lengths [B]: new tokens per row before its EOS; stop_reason: one of STOP_REASONS;
    message: a sentence saying why generation stopped."""

    tokens: np.ndarray
    lengths: np.ndarray
    stop_reason: str
    message: str


# ----------------------------------------------------------------------------- one draw


def pick(logits, key, temperature, top_k, top_p):
    """Next tokens [B] from logits [B, V]: greedy at temperature 0, else a filtered draw."""
    logits = logits.astype(jnp.float32)
    greedy = jnp.argmax(logits, axis=-1)
    x = logits / jnp.maximum(temperature, 1e-6)
    V = x.shape[-1]
    desc = -jnp.sort(-x, axis=-1)  # [B, V], largest first
    # top-k: keep logits >= the k-th largest (k = 0 keeps all).
    k = jnp.where(top_k > 0, jnp.minimum(top_k, V), V)
    kth = jax.lax.dynamic_index_in_dim(desc, k - 1, axis=-1, keepdims=True)
    desc = jnp.where(desc >= kth, desc, -jnp.inf)
    # top-p: the smallest prefix of the sorted distribution whose mass reaches top_p.
    probs = jax.nn.softmax(desc, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs
    kept = jnp.maximum(jnp.sum(before < top_p, axis=-1, keepdims=True), 1)
    threshold = jnp.take_along_axis(desc, kept - 1, axis=-1)
    x = jnp.where(x >= jnp.maximum(threshold, kth), x, -jnp.inf)
    sampled = jax.random.categorical(key, x, axis=-1)
    return jnp.where(temperature > 0, sampled, greedy).astype(jnp.int32)


# ----------------------------------------------------------------------------- checks


def _check_count(max_new_tokens) -> None:
    if int(max_new_tokens) != max_new_tokens or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be a non-negative integer, got {max_new_tokens}")
    if max_new_tokens > MAX_NEW_TOKENS:
        raise ValueError(f"max_new_tokens={max_new_tokens} is more than {MAX_NEW_TOKENS:,} (about "
                         "4 MB of text, hours of decoding): ask for fewer, and continue from the "
                         "output as the next prompt if you need more")


def _plan(model, prompt_ids, max_new_tokens, temperature, top_k, top_p, strict):
    """Validated (prompt [B, P] int32, new tokens to generate, context message or '')."""
    cfg = model.cfg
    prompt = np.asarray(prompt_ids)
    if prompt.ndim not in (1, 2):
        raise ValueError(f"prompt_ids must be [P] or [B, P] token ids, got shape {prompt.shape}")
    prompt = prompt if prompt.ndim == 2 else prompt[None]
    if prompt.shape[1] == 0:
        raise ValueError("the prompt is empty: give at least one token (e.g. a newline or BOS id)")
    if prompt.size and (prompt.min() < 0 or prompt.max() >= cfg.vocab_size):
        raise ValueError(f"prompt token ids must lie in [0, {cfg.vocab_size}), "
                         f"got [{prompt.min()}, {prompt.max()}]")
    _check_count(max_new_tokens)
    if not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0 (0: greedy), got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0: off), got {top_k}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    P, T = prompt.shape[1], cfg.max_len
    if cfg.kind == "decoder":
        if P > T:
            raise ValueError(f"the prompt has {P} tokens, more than the model's context max_len={T}")
        room, used = T - P, f"prompt {P} + new tokens <= max_len={T}"
    else:
        if P - 1 > T:
            raise ValueError(f"the prompt (source) has {P - 1} tokens, more than the model's "
                             f"context max_len={T}")
        room, used = T - 1, f"start token + new tokens <= max_len={T}"
    n, message = int(max_new_tokens), ""
    if n > room:
        message = (f"max_new_tokens={n} is beyond the context: at most {room} new tokens fit "
                   f"({used})")
        if strict:
            raise ValueError(message)
        n = room
        message = f"stopped at the context limit after {room} new tokens ({used})"
    return prompt.astype(np.int32), n, message


# ----------------------------------------------------------------------------- cached decoding


def _decode_step(model, params, cache, tok, encoded=None):
    """(last position's logits, new cache) after feeding `tok` [B, T] through the KV cache; an
    encoder-decoder model attends to `encoded`."""
    variables = {"params": params, "cache": cache}
    if model.cfg.kind != "decoder":
        logits, mut = model.apply(variables, encoded, None, tok, decode=True,
                                  method=model.decode, mutable=["cache"])
    else:
        logits, mut = model.apply(variables, tok, decode=True, mutable=["cache"])
    return logits[:, -1], mut["cache"]


@functools.lru_cache(maxsize=32)
def _program(model, batch: int, prompt_len: int, n: int):
    """jit(params, prompt, seed, temperature, top_k, top_p, eos) -> (tokens [B, n], steps)."""
    enc_dec = model.cfg.kind != "decoder"

    def step(params, cache, tok, encoded):
        return _decode_step(model, params, cache, tok, encoded)

    def run(params, prompt, seed, temperature, top_k, top_p, eos):
        key = jax.random.PRNGKey(seed)
        draw = lambda logits, t: pick(logits, jax.random.fold_in(key, t), temperature, top_k, top_p)
        if enc_dec:
            src = prompt[:, :-1] if prompt_len > 1 else prompt
            encoded = model.apply({"params": params}, src, method=model.encode)
            cache = models.init_cache(model, batch, 1 + n, src_len=src.shape[1])
            logits, cache = step(params, cache, prompt[:, -1:], encoded)  # caches the source
        else:
            cache = models.init_cache(model, batch, prompt_len + n)
            logits, cache = step(params, cache, prompt, None)  # prefill: the whole prompt at once
        pad = jnp.maximum(eos, 0)
        tok = draw(logits, 0)
        out = jnp.full((batch, n), pad, jnp.int32).at[:, 0].set(tok)
        done = tok == eos

        def cond(carry):
            t, _, _, _, done = carry
            return (t < n) & ~jnp.all(done)

        def body(carry):
            t, tok, cache, out, done = carry
            logits, cache = step(params, cache, tok[:, None], None)
            new = jnp.where(done, pad, draw(logits, t))
            return t + 1, new, cache, out.at[:, t].set(new), done | (new == eos)

        t, _, _, out, _ = jax.lax.while_loop(cond, body, (jnp.int32(1), tok, cache, out, done))
        return out, t

    return jax.jit(run)


def _finish(out, steps, eos_id, n, context_message) -> Generation:
    out = np.asarray(out)[:, :int(steps)]
    is_eos = (out == eos_id) if eos_id is not None else np.zeros(out.shape, bool)
    first_eos = is_eos.argmax(axis=1) if out.shape[1] else np.zeros(out.shape[0], int)
    lengths = np.where(is_eos.any(axis=1), first_eos, out.shape[1])
    if eos_id is not None and out.size and is_eos.any(axis=1).all():
        return Generation(out, lengths, "eos", f"stopped at the end-of-sequence token (id {eos_id})")
    if context_message:
        return Generation(out, lengths, "context", context_message)
    return Generation(out, lengths, "max_new_tokens", f"generated max_new_tokens={n} tokens")


def _slide(model, params, prompt_ids, *, max_new_tokens, seed, eos_id, progress=None,
           **request) -> Generation:
    """Decoder-only generation past the context window (see the module docstring)."""
    T = model.cfg.max_len
    prompt = np.asarray(prompt_ids)
    prompt = (prompt if prompt.ndim == 2 else prompt[None])[:, -(T - 1):] if T > 1 else prompt
    n, keep = int(max_new_tokens), max(T // 2, 1)
    seq, made, chunk = prompt.astype(np.int32), [], 0
    done = np.zeros(seq.shape[0], bool)
    while sum(x.shape[1] for x in made) < n and not done.all():
        room = T - seq.shape[1]
        g = generate_full(model, params, seq, max_new_tokens=room, seed=seed + 7919 * chunk,
                          eos_id=eos_id, strict=True, **request)
        new = g.tokens.copy()
        if eos_id is not None:
            new[done] = max(eos_id, 0)
            done |= (new == eos_id).any(axis=1)
        made.append(new)
        if progress is not None:
            progress(min(new.shape[1], n - sum(x.shape[1] for x in made[:-1])))
        seq, chunk = np.concatenate([seq, new], axis=1)[:, -keep:], chunk + 1
    out = np.concatenate(made, axis=1)[:, :n]
    context = (f" (past the context max_len={T}: each token saw at least the last {keep})"
               if prompt.shape[1] + n > T else "")
    g = _finish(out, out.shape[1], eos_id, n, "")
    return g._replace(message=g.message + context) if g.stop_reason != "eos" else g


def generate_full(model, params, prompt_ids, *, max_new_tokens: int, temperature: float = 1.0,
                  top_k: int = 0, top_p: float = 1.0, seed: int = 0, eos_id: int | None = None,
                  strict: bool = False, slide: bool = False, progress=None) -> Generation:
    """Like `generate`, returning a `Generation` (tokens, lengths, stop_reason, message).
    slide=True: a decoder-only model generates past its context window, calling
    progress(new tokens) after each window when given (a long request shows it is alive)."""
    if slide and model.cfg.kind == "decoder":
        check_request(model, prompt_ids, max_new_tokens=max_new_tokens, temperature=temperature,
                      top_k=top_k, top_p=top_p, slide=True)
        P = np.shape(prompt_ids)[-1]
        if P + int(max_new_tokens) > model.cfg.max_len:
            return _slide(model, params, prompt_ids, max_new_tokens=max_new_tokens, seed=seed,
                          eos_id=eos_id, temperature=temperature, top_k=top_k, top_p=top_p,
                          progress=progress)
    prompt, n, context_message = _plan(model, prompt_ids, max_new_tokens, temperature, top_k,
                                       top_p, strict)
    if n == 0:
        return _finish(np.zeros((prompt.shape[0], 0), np.int32), 0, eos_id, 0, context_message)
    program = _program(model, prompt.shape[0], prompt.shape[1], n)
    out, steps = program(meta.unbox(params), jnp.asarray(prompt), int(seed), float(temperature),
                         int(top_k), float(top_p), -1 if eos_id is None else int(eos_id))
    return _finish(out, steps, eos_id, n, context_message)


def generate(model, params, prompt_ids, *, max_new_tokens: int, temperature: float = 1.0,
             top_k: int = 0, top_p: float = 1.0, seed: int = 0, eos_id: int | None = None,
             strict: bool = False) -> np.ndarray:
    """New token ids continuing `prompt_ids`, decoded with the KV cache.

    prompt_ids [P] -> the new tokens [n] (without the prompt, cut before EOS);
    prompt_ids [B, P] -> [B, N] (rows that stopped at EOS padded with eos_id after it).
    Deterministic for a seed; greedy at temperature 0 (or top_k=1); nucleus sampling with
    top_p < 1. Stops after max_new_tokens, at eos_id, or at the context limit (strict=True
    makes asking for more than fits an error instead). `generate_full` also says why it stopped.
    """
    g = generate_full(model, params, prompt_ids, max_new_tokens=max_new_tokens,
                      temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                      eos_id=eos_id, strict=strict)
    return g.tokens[0, :g.lengths[0]] if np.ndim(prompt_ids) == 1 else g.tokens


# ----------------------------------------------------------------------------- ragged greedy


def prefill_bucket(n: int) -> int:
    """The largest length <= n of the form m * 2^k with m in 4..7 (every n < 8 is its own): a few
    prefill lengths per octave, so prompts of many lengths share programs while at most a fifth
    of a prompt is fed token by token."""
    n = int(n)
    step = 1 << max(0, n.bit_length() - 3)
    return max(1, n // step * step)


@functools.lru_cache(maxsize=32)
def _ragged_program(model, batch: int, prefill: int, length: int):
    """jit(params, seq [B, length], prompt_lens [B], ends [B], eos [B]) -> (seq, steps).

    Greedy decoding of prompts of different lengths in one program (decoder-only): the first
    `prefill` tokens (<= every prompt's length) go through in one call; after that one token a
    step, row i taking its own prompt token while t < prompt_lens[i] and its argmax after, until
    t reaches ends[i] or the row emits eos[i]. Each row sees exactly its own prompt at its own
    positions (no padding), so it continues as generate_full would at temperature 0."""

    def step(params, cache, tok):
        return _decode_step(model, params, cache, tok)

    def run(params, seq, prompt_lens, ends, eos):
        cache = models.init_cache(model, batch, length)
        logits, cache = step(params, cache, seq[:, :prefill])

        def cond(carry):
            t, _, _, _, done = carry
            return (t < length) & ~jnp.all(done)

        def body(carry):
            t, logits, cache, seq, done = carry
            forced = t < prompt_lens
            prompt_tok = jax.lax.dynamic_index_in_dim(seq, t, axis=1, keepdims=False)
            greedy = jnp.argmax(logits.astype(jnp.float32), axis=-1).astype(jnp.int32)
            tok = jnp.where(forced, prompt_tok, greedy)
            seq = jax.lax.dynamic_update_index_in_dim(seq, tok, t, axis=1)
            done = done | (~forced & ((tok == eos) | (t + 1 >= ends)))
            logits, cache = step(params, cache, tok[:, None])
            return t + 1, logits, cache, seq, done

        done = ends <= prefill
        t, _, _, seq, _ = jax.lax.while_loop(cond, body, (jnp.int32(prefill), logits, cache, seq, done))
        return seq, t

    return jax.jit(run)


def greedy_ragged(model, params, prompts, new_tokens, eos_ids, *, batch: int | None = None,
                  length: int | None = None) -> list[list[int]]:
    """Greedy continuations of decoder-only prompts of different lengths, in one program.

    prompts: token lists (each non-empty); new_tokens[i]: tokens to make for prompt i (with
    len(prompts[i]) + new_tokens[i] <= max_len); eos_ids[i]: its stop id or None (the stop id is
    left out of the result). batch: rows of the program (>= len(prompts); spare rows repeat
    prompt 0); length: the cache length (>= every prompt + its new tokens, <= max_len).
    The program depends only on (batch, prefill_bucket(shortest prompt), length), so callers
    that round `length` up to a few sizes compile a few programs for any mix of prompt lengths
    (generate_full compiles one per prompt length)."""
    if model.cfg.kind != "decoder":
        raise ValueError("greedy_ragged: decoder-only models")
    n = len(prompts)
    B = batch or n
    need = max(len(p) + int(k) for p, k in zip(prompts, new_tokens))
    L = length or need
    if B < n or not need <= L <= model.cfg.max_len or min(len(p) for p in prompts) < 1:
        raise ValueError(f"greedy_ragged: {n} prompts in batch {B}, need {need} <= length {L} "
                         f"<= max_len {model.cfg.max_len}, every prompt non-empty")
    rows = list(range(n)) + [0] * (B - n)
    seq = np.zeros((B, L), np.int32)
    for j, i in enumerate(rows):
        seq[j, :len(prompts[i])] = prompts[i]
    lens = np.asarray([len(prompts[i]) for i in rows], np.int32)
    ends = lens + np.asarray([int(new_tokens[i]) for i in rows], np.int32)
    eos = np.asarray([-1 if eos_ids[i] is None else int(eos_ids[i]) for i in rows], np.int32)
    program = _ragged_program(model, B, prefill_bucket(lens.min()), L)
    out, _ = program(meta.unbox(params), jnp.asarray(seq), jnp.asarray(lens), jnp.asarray(ends),
                     jnp.asarray(eos))
    out = np.asarray(out)
    result = []
    for j in range(n):
        new = [int(x) for x in out[j, lens[j]:ends[j]]]
        result.append(new[:new.index(eos[j])] if eos[j] >= 0 and eos[j] in new else new)
    return result


# ----------------------------------------------------------------------------- reference


@functools.lru_cache(maxsize=32)
def _recompute_step(model):
    """jit(params, src, seq, at, key, temperature, top_k, top_p) -> next tokens [B] drawn from
    the logits at position `at` of a full forward pass over seq."""
    enc_dec = model.cfg.kind != "decoder"

    def next_tokens(params, src, seq, at, key, temperature, top_k, top_p):
        variables = {"params": params}
        logits = model.apply(variables, src, seq) if enc_dec else model.apply(variables, seq)
        logits = jax.lax.dynamic_index_in_dim(logits, at, axis=1, keepdims=False)
        return pick(logits, key, temperature, top_k, top_p)

    return jax.jit(next_tokens)


def generate_by_recompute(model, params, prompt_ids, *, max_new_tokens: int, temperature: float = 1.0,
                          top_k: int = 0, top_p: float = 1.0, seed: int = 0,
                          eos_id: int | None = None, strict: bool = False) -> Generation:
    """The same draws as `generate_full` without a cache: a full forward pass per token.

    Slow (quadratic); a reference for tests of the cached path.
    """
    prompt, n, context_message = _plan(model, prompt_ids, max_new_tokens, temperature, top_k,
                                       top_p, strict)
    params = meta.unbox(params)
    enc_dec = model.cfg.kind != "decoder"
    key = jax.random.PRNGKey(seed)
    eos = -1 if eos_id is None else int(eos_id)
    B, P = prompt.shape
    src = prompt[:, :-1] if P > 1 else prompt
    # A fixed-size buffer (one compilation): causal attention makes the unused tail harmless.
    start = 1 if enc_dec else P
    seq = np.zeros((B, start + n), np.int32)
    seq[:, :start] = prompt[:, -1:] if enc_dec else prompt
    step = _recompute_step(model)
    done = np.zeros(B, bool)
    for t in range(n):
        new = np.asarray(step(params, src, seq, start + t - 1, jax.random.fold_in(key, t),
                              float(temperature), int(top_k), float(top_p)))
        seq[:, start + t] = np.where(done, max(eos, 0), new)
        done |= seq[:, start + t] == eos
        if done.all():
            n = t + 1
            break
    return _finish(seq[:, start:start + n], n, eos_id, n, context_message)


# ----------------------------------------------------------------------------- workdirs


def check_request(model, prompt_ids, *, max_new_tokens: int, temperature: float = 1.0,
                  top_k: int = 0, top_p: float = 1.0, slide: bool = False) -> None:
    """Raise ValueError (naming the problem) for a request `generate(..., strict=True)` refuses
    (with slide=True, a decoder's request past the context is fine).

    Needs only the model (no parameters), so commands can check their input before loading one.
    """
    if slide and model.cfg.kind == "decoder":  # any length fits: check the rest
        _check_count(max_new_tokens)
        prompt_ids, max_new_tokens = np.asarray(prompt_ids)[..., -1:], 0
    _plan(model, prompt_ids, max_new_tokens, temperature, top_k, top_p, strict=True)
