"""Same numbers as the tools people already trust.

- lm-evaluation-harness's `hf` model: the expected log-likelihoods, rolling log-likelihoods and
  greedy generations in tests/fixtures/lm_eval_parity/expected.json were written by
  scripts/make_lm_eval_parity.py, which runs lm-eval's own HFLM (torch + transformers) on the
  tiny random models of tests/fixtures/hf/. Here lm's adapter runs on the same weights
  (imported through lm.hf) and must agree to 1e-3 nats, with equal is_greedy and equal text.
- Rotary frequencies: float64 computed, rounded once to float32.
"""

import functools
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from lm import attention
from lm.config import ModelConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HF = os.path.join(REPO, "tests", "fixtures", "hf")
PARITY = os.path.join(REPO, "tests", "fixtures", "lm_eval_parity")


def test_rope_frequencies_are_float64_rounded_once():
    # 96 rotated dims, base 1e4: float32 pow misrounds 29 of the 48 frequencies.
    cfg = ModelConfig(d_model=192, num_heads=2, position="rope", rope_base=10000.0)
    d = cfg.rotary_dims
    exact = 1.0 / 10000.0 ** (np.arange(0, d, 2, dtype=np.float64) / d)
    freq = np.asarray(attention.rope_frequencies(cfg))
    assert freq.dtype == np.float32
    np.testing.assert_array_equal(freq, exact.astype(np.float32))
    before = np.asarray(10000.0 ** (-jnp.arange(d // 2, dtype=jnp.float32) / (d // 2)))
    position = 100_000  # the angle error grows with the position

    def error(f):
        return np.abs(position * f.astype(np.float64) - position * exact)

    assert error(freq).max() < error(before).max()
    assert error(freq).sum() < 0.5 * error(before).sum()


def _expected():
    with open(os.path.join(PARITY, "expected.json")) as f:
        return json.load(f)


@functools.lru_cache(maxsize=None)
def _evaluator(name: str, max_len: int):
    """lm's adapter on a fixture's weights, imported through lm.hf."""
    from lm import models
    from lm.evals.api import Evaluator
    from lm.hf import load
    from lm.data.tokenizers import HFTokenizer

    path = os.path.join(PARITY if name == "llama_bos" else HF, name)
    family, cfg, _ = load.pretrained_config(path, max_len)
    params = load.load_params(path, family, cfg)
    tok = HFTokenizer.from_model_dir(path, vocab_size=cfg.vocab_size)
    return Evaluator(models.build_model(cfg), params, tok, batch_size=4)


MODELS = ["gpt_neox", "llama", "llama_bos"]


@pytest.mark.parametrize("name", MODELS)
def test_loglikelihoods_match_lm_eval_hf(name):
    want = _expected()[name]
    ev = _evaluator(name, want["max_length"])
    assert ev.prefix_token == want["prefix_token_id"]  # BOS when the tokenizer has one, else EOS
    got = ev.loglikelihood([(c, x) for c, x, _, _ in want["loglikelihood"]], strict=False)
    for (c, x, ll, greedy), (mine, my_greedy) in zip(want["loglikelihood"], got):
        assert mine == pytest.approx(ll, abs=1e-3), (c[-20:], x)
        assert my_greedy == greedy, (c[-20:], x)
    rolling = ev.loglikelihood_rolling([t for t, _ in want["rolling"]])
    for (text, ll), mine in zip(want["rolling"], rolling):
        assert mine == pytest.approx(ll, abs=1e-3), text[:20]


@pytest.mark.parametrize("name", ["gpt_neox", "llama_bos"])  # byte-level; sentencepiece + EOS
def test_greedy_generations_match_lm_eval_hf(name):
    want = _expected()[name]
    ev = _evaluator(name, want["max_length"])
    got = ev.generate_until([(c, k) for c, k, _ in want["generate"]], strict=False)
    assert got == [s for _, _, s in want["generate"]]


def test_the_fixture_exercises_eos_mid_answer():
    """llama_bos answers "The" with a few tokens and then EOS: without the EOS cut the text
    would go on (lm-eval's answer is the text before EOS)."""
    from lm import sampling

    want = {c: s for c, _, s in _expected()["llama_bos"]["generate"]}
    ev = _evaluator("llama_bos", 128)
    ids = np.asarray([ev.tok_encode("The")], np.int32)
    g = sampling.generate_full(ev.model, ev.params, ids, max_new_tokens=24, temperature=0.0)
    tokens = [int(t) for t in g.tokens[0]]
    assert ev.eos_token in tokens[1:-1]
    assert ev._decode_text(tokens) != want["The"] == ev._decode_text(tokens[:tokens.index(ev.eos_token)])


def test_harness_rules_whitespace_prefix_and_empty_context():
    """The three tokenization rules, on the BOS tokenizer, against lm-eval's own code
    (TemplateLM._encode_pair and the empty-context rule) with lm's tokens."""
    pytest.importorskip("lm_eval")
    from lm_eval.api.model import TemplateLM

    ev = _evaluator("llama_bos", 128)

    class Reference(TemplateLM):  # lm-eval's pair rule over lm's tokenizer (tok_encode: HFLM's)
        backend = "causal"
        eot_token_id = ev.eos_token
        prefix_token_id = ev.prefix_token
        tok_encode = staticmethod(lambda s, add_special_tokens=None: (
            ev.encode(s) if add_special_tokens is False else ev.tok_encode(s)))
        loglikelihood_rolling = generate_until = _loglikelihood_tokens = None

        def __init__(self):
            pass

    ref = Reference()
    for ctx, cont in [("Answer:\n", "yes"), ("a \t\n ", "b"), ("x", " y"), ("Returns the", " list")]:
        assert ev.encode_pair(ctx, cont) == ref._encode_pair(ctx, cont)
    assert ev.tok_encode("x")[0] == ev.prefix_token == 1  # BOS, added by the template
    ctx, cont = ev.encode_pair("", "An empty context")
    assert ctx == [1] and cont == ev.encode("An empty context")
