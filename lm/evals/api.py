"""The evaluation API: lm-evaluation-harness's three request types over any lm model.

    ev = Evaluator.from_workdir("runs/x")                  # or Evaluator(model, params, tokenizer)
    ev.loglikelihood([("12+30=", "42")])                   # [(sum log p(cont | ctx), is_greedy)]
    ev.loglikelihood_rolling(["a whole document"])         # [sum log p(text)]
    ev.generate_until([("12+30=", {"until": ["\\n"], "max_gen_toks": 4})])   # ["42"]

Log-probabilities are natural logs (nats). `is_greedy` is True when every continuation token is
the argmax given the context and the continuation before it (teacher forcing), i.e. greedy
decoding would produce exactly the continuation.

Scoring runs as one jitted forward pass per batch, sharded like the trainer's eval: rows split
over the mesh's data and fsdp axes, parameters where they already are. Requests are sorted by
length (longest first) and padded to a few fixed shapes (the batch size, and the length
rounded up to a power of two capped at the context), so a whole task compiles once or twice.
Greedy generation of a decoder-only model compiles per (prefill bucket, cache-length bucket),
not per prompt length (lm.sampling.greedy_ragged).

Context limit (model.max_len = T). loglikelihood: context + continuation is cut from the left
to T + 1 tokens, as the harness does; with strict=True (the default of the direct API) a
request that needs cutting is an error instead; a continuation longer than T is always an
error. generate_until: a prompt longer than T is an error (strict; generation stops at the
context), or (strict=False, HFLM's rule) any prompt is cut from the left to its last
T - max_gen_toks tokens, so the answer always has room.
loglikelihood_rolling cuts the text into the harness's disjoint windows of T tokens (each
window after the first is predicted from the `context_len` tokens before it).

Model kinds: decoder-only, and encoder-decoder in the prefix-LM convention of training and
sampling (the encoder reads context[:-1], the decoder starts from context[-1]).

Tokenization follows lm-evaluation-harness's `hf` model (HFLM), so the numbers are the ones a
paper reports: contexts and documents are encoded with the special tokens the tokenizer's own
template adds (Llama: a leading BOS), unless the text already starts with the prefix token's
text; context + continuation are encoded whole and the continuation is the tail after the
context's tokens (so a subword tokenizer sees the join), and ALL trailing whitespace of the
context (spaces, newlines) moves to the continuation. An empty context, and the first window
of a rolling document, start from one prefix token: the tokenizer's BOS when it has one, else
its EOS, else the last token of "\\n". generate_until stops each row at EOS on the device, cuts
the text there (special tokens are left out of the text) and at the first stop string.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax.core import meta

from lm import sampling, sharding

MIN_BUCKET = 16


@dataclasses.dataclass
class Scored:
    """Per-token results of one (context, continuation) request."""

    logprobs: np.ndarray  # [n] log p(token) of each continuation token
    greedy: np.ndarray  # [n] bool: the token is the argmax
    truncated: int  # context tokens cut from the left to fit the context window

    @property
    def total(self) -> float:
        return float(np.sum(self.logprobs, dtype=np.float64))

    @property
    def is_greedy(self) -> bool:
        return bool(np.all(self.greedy))


def _bucket(n: int, cap: int) -> int:
    return min(cap, max(MIN_BUCKET, 1 << max(0, n - 1).bit_length()))


def rolling_windows(tokens: Sequence[int], prefix_token: int, max_len: int, context_len: int = 1):
    """(context, continuation) token pairs covering `tokens` once: the harness's
    get_rolling_token_windows followed by make_disjoint_window."""
    if not 1 <= context_len <= max_len:
        raise ValueError(f"context_len must be in [1, max_len={max_len}], got {context_len}")
    tokens = list(tokens)
    if not tokens:
        return []
    pred_len = max_len - context_len + 1
    first = min(max_len, len(tokens))
    windows = [([prefix_token] + tokens[:first - 1], tokens[:first])]
    done = first
    while done < len(tokens):
        n = min(len(tokens) - done, pred_len)
        end = done + n
        windows.append((tokens[max(0, end - max_len - 1):end - 1], tokens[end - n:end]))
        done = end
    return [(ctx[:len(ctx) - (len(cont) - 1)], cont) for ctx, cont in windows]


class Evaluator:
    """loglikelihood / loglikelihood_rolling / generate_until for one model and its tokenizer."""

    def __init__(self, model, params, tokenizer, *, batch_size: int = 16, mesh=None):
        self.model, self.tokenizer, self.step = model, tokenizer, None
        self.cfg = model.cfg
        self.max_len = int(self.cfg.max_len)
        params = meta.unbox(params)
        if mesh is None:
            leaf = jax.tree.leaves(params)[0]
            mesh = getattr(getattr(leaf, "sharding", None), "mesh", None)
        if not isinstance(mesh, jax.sharding.Mesh):  # plain arrays: one device, as evaluation.evaluate
            mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1})
            params = jax.device_put(params, sharding.replicated(mesh))
        self.mesh, self.params = mesh, params
        unit = math.lcm(sharding.batch_axis_size(mesh), jax.process_count())
        self.batch_size = max(unit, -(-int(batch_size) // unit) * unit)
        self._score = self._make_score()
        self.eos_token = _special_id(tokenizer, "eos")
        self.prefix_token = _prefix_token(tokenizer)
        self._prefix_text = self.decode([self.prefix_token])
        self._lead, self._trail = _template_specials(tokenizer)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_run(cls, run, params, *, batch_size: int | None = None):
        """From a trainer Run (lm.runs.setup / load_run) and its params."""
        micro = run.config.train.batch_size // max(run.config.train.grad_accum, 1)
        return cls(run.model, params, run.dataset.tokenizer, batch_size=batch_size or micro,
                   mesh=run.mesh)

    @classmethod
    def from_workdir(cls, workdir: str, *, step: int | None = None, batch_size: int | None = None):
        """From a trained workdir (newest checkpoint by default)."""
        from lm import runs

        run, state = runs.load_run(workdir, step=step)
        ev = cls.from_run(run, state["params"], batch_size=batch_size)
        ev.step = getattr(run, "restored_step", step)  # the checkpoint actually loaded
        return ev

    # ------------------------------------------------------------------ tokens

    def encode(self, text: str) -> list[int]:
        """The text's own tokens, no special tokens."""
        return [int(i) for i in self.tokenizer.encode(text)]

    def tok_encode(self, text: str) -> list[int]:
        """As the harness encodes a context or document: with the tokenizer template's special
        tokens, unless the text already starts with the prefix token's text."""
        if self._prefix_text and text.startswith(self._prefix_text):
            return self.encode(text)
        return self._lead + self.encode(text) + self._trail

    def decode(self, ids) -> str:
        return self.tokenizer.decode(np.asarray(ids, np.int32))

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Token ids of (context, continuation), split as the harness splits them
        (TemplateLM.loglikelihood and _encode_pair)."""
        if not context:
            cont = self.encode(continuation)
            if cont and cont[0] == self.prefix_token:
                return cont[:1], cont[1:]
            return [self.prefix_token], cont
        n_space = len(context) - len(context.rstrip())
        if n_space:
            context, continuation = context[:-n_space], context[-n_space:] + continuation
        whole, ctx = self.tok_encode(context + continuation), self.tok_encode(context)
        return ctx or [self.prefix_token], whole[len(ctx):]

    # ------------------------------------------------------------------ scoring

    def _make_score(self):
        model, enc_dec = self.model, self.cfg.kind != "decoder"

        def score(params, src, src_seg, inputs, targets):
            variables = {"params": params}
            if enc_dec:  # the encoder is bidirectional: segment ids keep it off the padding
                logits = model.apply(variables, src, inputs, src_segment_ids=src_seg,
                                     tgt_segment_ids=jnp.ones_like(inputs))
            else:
                logits = model.apply(variables, inputs)
            logits = logits.astype(jnp.float32)
            logp = jax.nn.log_softmax(logits, axis=-1)
            target_logp = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
            return target_logp, jnp.argmax(logits, axis=-1) == targets

        param_shardings = jax.tree.map(lambda x: x.sharding, self.params)
        rows = sharding.batch_sharding(self.mesh)
        return jax.jit(score, in_shardings=(param_shardings, rows, rows, rows, rows),
                       out_shardings=sharding.replicated(self.mesh))

    def _row(self, ctx: list[int], cont: list[int], strict: bool):
        """(src, inputs, targets, n, truncated) of one request: the last n targets are scored."""
        T = self.max_len
        if not cont:
            raise ValueError("a loglikelihood request has an empty continuation")
        if len(cont) > T:
            raise ValueError(f"the continuation has {len(cont)} tokens, more than the model's "
                             f"context max_len={T}")
        if self.cfg.kind == "decoder":
            full = ctx + cont
            cut = max(0, len(full) - (T + 1))
            if cut and strict:
                raise ValueError(f"the prompt has {len(ctx)} tokens; with the {len(cont)}-token "
                                 f"continuation it is longer than the model's context max_len={T}")
            full = full[cut:]
            return [], full[:-1], full[1:], len(cont), cut
        src, start = (ctx[:-1] or ctx), ctx[-1]
        cut = max(0, len(src) - T)
        if cut and strict:
            raise ValueError(f"the prompt (source) has {len(src)} tokens, more than the model's "
                             f"context max_len={T}")
        return src[cut:], [start] + cont[:-1], cont, len(cont), cut

    def score_tokens(self, requests: Sequence[tuple[list[int], list[int]]], *,
                     strict: bool = True) -> list[Scored]:
        """Per-token log-probabilities of each (context ids, continuation ids) request."""
        rows = [self._row(list(c), list(x), strict) for c, x in requests]
        order = sorted(range(len(rows)), key=lambda i: -(len(rows[i][1]) + len(rows[i][0])))
        out: list[Scored | None] = [None] * len(rows)
        B, pc, pi = self.batch_size, jax.process_count(), jax.process_index()
        with sharding.activate(self.mesh):
            for start in range(0, len(order), B):
                chunk = order[start:start + B]
                L = _bucket(max(len(rows[i][1]) for i in chunk), self.max_len)
                S = _bucket(max(len(rows[i][0]) for i in chunk), self.max_len) if self.cfg.kind != "decoder" else 1
                arrays = {"src": np.zeros((B, S), np.int32), "src_seg": np.zeros((B, S), np.int32),
                          "inputs": np.zeros((B, L), np.int32), "targets": np.zeros((B, L), np.int32)}
                for j, i in enumerate(chunk):
                    s, x, y, _, _ = rows[i]
                    arrays["src"][j, :len(s)], arrays["src_seg"][j, :len(s)] = s, 1
                    arrays["inputs"][j, :len(x)], arrays["targets"][j, :len(y)] = x, y
                local = {k: v[pi * B // pc:(pi + 1) * B // pc] for k, v in arrays.items()}
                g = sharding.global_batch(local, self.mesh)
                logp, greedy = jax.device_get(self._score(self.params, g["src"], g["src_seg"],
                                                          g["inputs"], g["targets"]))
                for j, i in enumerate(chunk):
                    _, _, y, n, cut = rows[i]
                    end = len(y)
                    out[i] = Scored(np.asarray(logp[j, end - n:end]), np.asarray(greedy[j, end - n:end]), cut)
        return out

    def loglikelihood(self, requests: Sequence[tuple[str, str]], *, strict: bool = True):
        """[(sum log p(continuation | context), is_greedy)] for (context, continuation) strings."""
        scored = self.score_tokens([self.encode_pair(c, x) for c, x in requests], strict=strict)
        return [(s.total, s.is_greedy) for s in scored]

    def loglikelihood_rolling(self, texts: Sequence[str], *, context_len: int = 1) -> list[float]:
        """[sum log p(text)] of whole texts, scored in the harness's disjoint windows."""
        windows, owner = [], []
        for k, text in enumerate(texts):
            ws = rolling_windows(self.tok_encode(text), self.prefix_token, self.max_len, context_len)
            windows += ws
            owner += [k] * len(ws)
        totals = [0.0] * len(texts)
        for k, s in zip(owner, self.score_tokens(windows, strict=True)):
            totals[k] += s.total
        return totals

    # ------------------------------------------------------------------ generation

    def _settings(self, kwargs: dict) -> tuple:
        kwargs = dict(kwargs or {})
        until = kwargs.pop("until", None) or []
        until = [until] if isinstance(until, str) else list(until)
        max_gen = int(kwargs.pop("max_gen_toks", kwargs.pop("max_new_tokens", 32)))
        do_sample = kwargs.pop("do_sample", None)
        temperature = float(kwargs.pop("temperature", 0.0) or 0.0)
        if do_sample is False:
            temperature = 0.0
        top_k = int(kwargs.pop("top_k", 0) or 0)
        top_p = float(kwargs.pop("top_p", 1.0) or 1.0)
        seed = int(kwargs.pop("seed", 0) or 0)
        if kwargs:
            raise ValueError(f"generate_until: unknown generation setting(s) {sorted(kwargs)}; known: "
                             "until, max_gen_toks, do_sample, temperature, top_k, top_p, seed")
        return tuple(until), max_gen, temperature, top_k, top_p, seed

    def stop_tokens(self, until) -> list[int]:
        """The device's stop set, as lm-eval's HFLM: EOS, then each stop string that is one token.
        (sampling stops on one id: the first; the text is cut at the rest.)"""
        ids = [self.eos_token] if self.eos_token is not None else []
        for s in until:
            one = self.encode(s) if s else []
            if len(one) == 1 and one[0] not in ids:
                ids.append(one[0])
        return ids

    def _plan(self, context: str, kwargs: dict, strict: bool):
        """(prompt ids, stop strings, max_gen, sampling setting) of one generate_until request."""
        until, max_gen, temperature, top_k, top_p, seed = self._settings(kwargs)
        ids = self.tok_encode(context) or [self.prefix_token]
        limit = self.max_len if self.cfg.kind == "decoder" else self.max_len + 1
        if strict and len(ids) > limit:
            raise ValueError(f"the prompt has {len(ids)} tokens, more than the model's "
                             f"context max_len={self.max_len}")
        if not strict and self.cfg.kind == "decoder":  # the harness keeps max_gen tokens free
            if max_gen >= self.max_len:
                raise ValueError(f"max_gen_toks={max_gen} leaves no room for the prompt in the "
                                 f"model's context max_len={self.max_len} (lm-eval's default is "
                                 f"256): set max_gen_toks in the task's generation_kwargs")
            ids = ids[-(self.max_len - max_gen):]
        elif not strict:
            ids = ids[-limit:]
        sampling.check_request(self.model, np.asarray(ids), max_new_tokens=0,
                               temperature=temperature, top_k=top_k, top_p=top_p)
        if self.eos_token is not None:  # HFLM's stop strings include EOS's own text
            eos_text = self.decode([self.eos_token])
            until = until + ((eos_text,) if eos_text and eos_text not in until else ())
        return ids, until, max_gen, (temperature, top_k, top_p, seed)

    def generate_until(self, requests: Sequence[tuple[str, dict]], *, strict: bool = True) -> list[str]:
        """Greedy (or sampled) continuations of each context, cut at EOS and before the first stop
        string. Sampling is seeded: a batch of requests draws with seed + 7919 * its index, so
        rows of different batches do not share their random numbers."""
        plans = [self._plan(context, kwargs, strict) for context, kwargs in requests]
        out = [""] * len(plans)
        B = self.batch_size
        ragged = [i for i, p in enumerate(plans) if p[3][0] == 0.0 and self.cfg.kind == "decoder"]
        # Greedy requests of a decoder-only model: prompts of any length, with any stop token and
        # max_gen, share one program per (batch, prefill bucket, cache length bucket); the
        # grouping below compiles one program per distinct prompt length (seconds each).
        ragged.sort(key=lambda i: -len(plans[i][0]))  # similar lengths share a batch
        for start in range(0, len(ragged), B):
            chunk = [i for i in ragged[start:start + B]
                     if min(plans[i][2], self.max_len - len(plans[i][0])) > 0]  # else "" (no room)
            if not chunk:
                continue
            room = [min(plans[i][2], self.max_len - len(plans[i][0])) for i in chunk]
            need = max(len(plans[i][0]) + k for i, k in zip(chunk, room))
            new = sampling.greedy_ragged(
                self.model, self.params, [plans[i][0] for i in chunk], room,
                [(self.stop_tokens(plans[i][1]) or [None])[0] for i in chunk], batch=B,
                length=_bucket(need, self.max_len))
            for i, tokens in zip(chunk, new):
                if self.eos_token in tokens:  # the device stopped at another stop token
                    tokens = tokens[:tokens.index(self.eos_token)]
                out[i] = _cut(self._decode_text(tokens), plans[i][1])
        groups: dict = {}
        done = set(ragged)
        for i, (ids, until, max_gen, setting) in enumerate(plans):
            if i in done:
                continue
            stop = (self.stop_tokens(until) or [None])[0]
            groups.setdefault((len(ids), max_gen, stop, setting), []).append(i)
        for (_, max_gen, stop, (temperature, top_k, top_p, seed)), members in groups.items():
            for start in range(0, len(members), B):
                chunk = members[start:start + B]
                prompts = np.asarray([plans[i][0] for i in chunk] + [plans[chunk[0]][0]] * (B - len(chunk)),
                                     np.int32)  # a fixed batch: one program per prompt length
                g = sampling.generate_full(self.model, self.params, prompts, max_new_tokens=max_gen,
                                           temperature=temperature, top_k=top_k, top_p=top_p,
                                           seed=seed + 7919 * (start // B), eos_id=stop)  # batches draw apart
                for j, i in enumerate(chunk):
                    new = [int(t) for t in g.tokens[j, :g.lengths[j]]]
                    if self.eos_token in new:  # the device stopped at another stop token
                        new = new[:new.index(self.eos_token)]
                    out[i] = _cut(self._decode_text(new), plans[i][1])
        return out

    def _decode_text(self, ids) -> str:
        """Generated text as HFLM decodes it: special tokens (BOS, EOS, pad) left out."""
        backend = getattr(self.tokenizer, "tok", None)
        if backend is not None and hasattr(backend, "decode"):
            return backend.decode([int(i) for i in ids], skip_special_tokens=True)
        return self.decode(ids)


def _special_id(tokenizer, kind: str) -> int | None:
    """The tokenizer's BOS or EOS id (kind "bos" / "eos"): its own attribute, else the
    Hugging Face tokenizer_config.json entry (lm.hf tokenizers keep it), else None."""
    own = getattr(tokenizer, f"{kind}_id", None)
    if own is not None and int(own) >= 0:
        return int(own)
    name = (getattr(tokenizer, "config", None) or {}).get(f"{kind}_token")
    name = name.get("content") if isinstance(name, dict) else name
    backend = getattr(tokenizer, "tok", None)
    if not name or backend is None or not hasattr(backend, "token_to_id"):
        return None
    found = backend.token_to_id(name)
    return None if found is None else int(found)


def _template_specials(tokenizer) -> tuple[list[int], list[int]]:
    """The special ids a Hugging Face tokenizer's template puts before / after every text
    (Llama 2: [BOS], []; GPT-2, Qwen: [], []); none for lm's own tokenizers."""
    backend = getattr(tokenizer, "tok", None)
    if backend is None or not hasattr(backend, "encode"):
        return [], []
    plain = backend.encode("a", add_special_tokens=False).ids
    full = backend.encode("a", add_special_tokens=True).ids
    for k in range(len(full) - len(plain) + 1):
        if full[k:k + len(plain)] == plain:
            return list(full[:k]), list(full[k + len(plain):])
    return [], []


def _prefix_token(tokenizer) -> int:
    """What an empty context and a rolling document start from (HFLM's prefix_token_id): BOS,
    else EOS, else the newline token, else id 0."""
    for kind in ("bos", "eos"):
        found = _special_id(tokenizer, kind)
        if found is not None:
            return found
    try:
        newline = tokenizer.encode("\n")
    except ValueError:  # a character vocabulary without a newline
        newline = []
    return int(newline[-1]) if len(newline) else 0


def _cut(text: str, until) -> str:
    """The text before the first occurrence of each stop string, in turn (HFLM's rule)."""
    for s in until:
        if s:
            text = text.split(s)[0]
    return text
