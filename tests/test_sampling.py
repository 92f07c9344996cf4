"""Generation with the KV cache equals generation by full recomputation; greedy, top-k, top-p, EOS,
context limit. Tiny random models of both kinds; one prompt shape per model keeps compiles few."""

import jax
import numpy as np
import pytest
from flax.core import meta

from lm import sampling
from lm.config import ModelConfig
from lm.models import build_model

PROMPT = np.array([[1, 2, 3, 4], [7, 7, 0, 5]], np.int32)  # [B=2, P=4]
N = 12  # = max_len - P: the decoder's whole context


@pytest.fixture(scope="module", params=["decoder", "encoder_decoder"])
def lm(request):
    cfg = ModelConfig(kind=request.param, vocab_size=13, max_len=16, d_model=16, num_layers=1,
                      num_heads=2, num_kv_heads=1)
    model = build_model(cfg)
    x = np.zeros((1, 8), np.int32)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), *((x,) if cfg.kind == "decoder" else (x, x)))
    # Random weights drawn in numpy (no init compile), larger than the init's so that logits are
    # peaked and depend on the context.
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: rng.normal(0, 0.3, s.shape).astype(np.float32),
                          meta.unbox(shapes["params"]))
    return model, params


SETTINGS = [dict(temperature=1.0), dict(temperature=0.8, top_k=3), dict(temperature=1.0, top_p=0.7),
            dict(temperature=0.0)]


def test_cache_equals_recompute(lm):
    model, params = lm
    outs = []
    for kw in SETTINGS:
        for seed in (0, 1):
            cached = sampling.generate_full(model, params, PROMPT, max_new_tokens=N, seed=seed, **kw)
            recomputed = sampling.generate_by_recompute(model, params, PROMPT, max_new_tokens=N,
                                                        seed=seed, **kw)
            np.testing.assert_array_equal(cached.tokens, recomputed.tokens, err_msg=str(kw))
            assert cached.tokens.shape == (2, N) and cached.stop_reason == "max_new_tokens"
            outs.append(cached.tokens)
    # Sampling is random (seeds differ), deterministic for a seed, and greedy ignores the seed.
    assert not np.array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(
        outs[0], sampling.generate(model, params, PROMPT, max_new_tokens=N, seed=0))
    np.testing.assert_array_equal(outs[-2], outs[-1])


def test_greedy_and_top_k_one(lm):
    model, params = lm
    greedy = sampling.generate(model, params, PROMPT, max_new_tokens=N, temperature=0.0)
    top1 = sampling.generate(model, params, PROMPT, max_new_tokens=N, temperature=1.5, top_k=1, seed=7)
    tiny_p = sampling.generate(model, params, PROMPT, max_new_tokens=N, top_p=1e-6, seed=3)
    np.testing.assert_array_equal(greedy, top1)
    np.testing.assert_array_equal(greedy, tiny_p)


def test_eos_stops_rows(lm):
    model, params = lm
    greedy = sampling.generate(model, params, PROMPT, max_new_tokens=N, temperature=0.0)
    eos = int(greedy[0, 2])
    g = sampling.generate_full(model, params, PROMPT, max_new_tokens=N, temperature=0.0, eos_id=eos)
    ref = sampling.generate_by_recompute(model, params, PROMPT, max_new_tokens=N, temperature=0.0,
                                         eos_id=eos)
    np.testing.assert_array_equal(g.tokens, ref.tokens)
    for row in range(2):
        hits = np.flatnonzero(greedy[row] == eos)
        length = hits[0] if hits.size else N
        assert g.lengths[row] == length
        np.testing.assert_array_equal(g.tokens[row, :length], greedy[row, :length])
        assert (g.tokens[row, length:] == eos).all()
    both = all((greedy[r] == eos).any() for r in range(2))
    assert g.stop_reason == ("eos" if both else "max_new_tokens")
    assert g.tokens.shape[1] == (max(g.lengths) + 1 if both else N)


def test_context_limit(lm):
    model, params = lm
    room = model.cfg.max_len - (PROMPT.shape[1] if model.cfg.kind == "decoder" else 1)
    with pytest.raises(ValueError, match="beyond the context"):
        sampling.generate(model, params, PROMPT, max_new_tokens=room + 1, strict=True)
    if model.cfg.kind == "decoder":  # lenient: stops at the limit and says so
        g = sampling.generate_full(model, params, PROMPT, max_new_tokens=50, temperature=0.0)
        assert g.stop_reason == "context" and g.tokens.shape == (2, room)
        assert "context limit" in g.message


def test_bad_arguments(lm):
    model, params = lm
    cases = [(dict(prompt_ids=np.zeros((1, 0), np.int32)), "empty"),
             (dict(prompt_ids=np.array([1, 13])), r"lie in \[0, 13\)"),
             (dict(prompt_ids=PROMPT, temperature=-1.0), "temperature"),
             (dict(prompt_ids=PROMPT, temperature=float("nan")), "temperature must be a finite"),
             (dict(prompt_ids=PROMPT, temperature=float("inf")), "temperature must be a finite"),
             (dict(prompt_ids=PROMPT, top_p=float("nan")), "top_p"),
             (dict(prompt_ids=PROMPT, top_p=0.0), "top_p"),
             (dict(prompt_ids=PROMPT, top_k=-2), "top_k"),
             (dict(prompt_ids=np.zeros((1, 40), np.int32)), "more than the model's context")]
    for kw, match in cases:
        with pytest.raises(ValueError, match=match):
            sampling.generate(model, params, max_new_tokens=2, **kw)


def test_pick_filters_and_renormalises():
    """Draws of `pick` stay inside the top-k / nucleus set and follow the renormalised softmax."""
    probs = np.array([0.5, 0.3, 0.1, 0.06, 0.04])
    logits = np.log(probs)[None].astype(np.float32)
    keys = jax.random.split(jax.random.PRNGKey(0), 4000)
    draw = jax.jit(jax.vmap(lambda k, tk, tp: sampling.pick(logits, k, 1.0, tk, tp)[0], (0, None, None)))
    for top_k, top_p, support in [(0, 1.0, 5), (3, 1.0, 3), (0, 0.75, 2), (0, 0.85, 3), (2, 0.95, 2)]:
        counts = np.bincount(np.asarray(draw(keys, top_k, top_p)), minlength=5)
        assert counts[support:].sum() == 0 and (counts[:support] > 0).all(), (top_k, top_p, counts)
        want = probs[:support] / probs[:support].sum()
        np.testing.assert_allclose(counts[:support] / len(keys), want, atol=0.03)
    greedy = sampling.pick(logits, keys[0], 0.0, 0, 1.0)
    assert int(greedy[0]) == 0


def test_slide_past_the_context(lm):
    """slide=True (what `lm sample` uses) goes on past max_len, as nanoGPT does: after the first
    window, each chunk starts from the last max_len // 2 tokens."""
    model, params = lm
    if model.cfg.kind != "decoder":
        pytest.skip("sliding is for decoder-only models")
    T = model.cfg.max_len
    g = sampling.generate_full(model, params, PROMPT, max_new_tokens=40, temperature=0.0, slide=True)
    assert g.tokens.shape == (2, 40) and g.stop_reason == "max_new_tokens"
    assert "past the context" in g.message
    plain = sampling.generate_full(model, params, PROMPT, max_new_tokens=N, temperature=0.0)
    np.testing.assert_array_equal(g.tokens[:, :N], plain.tokens)  # the first window: unchanged
    window = np.concatenate([PROMPT, g.tokens], axis=1)[:, T - T // 2:T]
    nxt = sampling.generate_full(model, params, window, max_new_tokens=1, temperature=0.0)
    np.testing.assert_array_equal(nxt.tokens[:, 0], g.tokens[:, N])  # then: the last T // 2
    long = np.tile(PROMPT, (1, 10))  # 40 tokens > max_len: cut to the most recent, not refused
    assert sampling.generate_full(model, params, long, max_new_tokens=5, temperature=0.0,
                                  slide=True).tokens.shape == (2, 5)
    with pytest.raises(ValueError, match="max_new_tokens"):
        sampling.generate_full(model, params, PROMPT, max_new_tokens=-1, slide=True)
    with pytest.raises(ValueError, match="more than 1,000,000"):  # refused before any decoding
        sampling.check_request(model, PROMPT, max_new_tokens=sampling.MAX_NEW_TOKENS + 1, slide=True)
    seen = []  # a long request reports each window as it goes
    g = sampling.generate_full(model, params, PROMPT, max_new_tokens=40, temperature=0.0, slide=True,
                               progress=seen.append)
    assert sum(seen) == 40 and len(seen) > 1


def test_zero_new_tokens_is_an_empty_continuation(lm):
    model, params = lm
    for slide in (False, True):
        g = sampling.generate_full(model, params, PROMPT, max_new_tokens=0, slide=slide, eos_id=3)
        assert g.tokens.shape == (2, 0) and list(g.lengths) == [0, 0]
        assert g.stop_reason == "max_new_tokens"


def test_greedy_ragged_equals_greedy_per_prompt(lm):
    """Prompts of different lengths in one program (lm.evals' greedy generation): each row is
    what generate_full gives its prompt alone at temperature 0, cut before its own stop id. A
    prompt extended by its own greedy tokens continues with the rest of them (greedy is
    deterministic), so one batch of PROMPT is the reference for every length."""
    model, params = lm
    if model.cfg.kind != "decoder":
        with pytest.raises(ValueError, match="decoder-only"):
            sampling.greedy_ragged(model, params, [[1]], [1], [None])
        return
    greedy = sampling.generate(model, params, PROMPT, max_new_tokens=N, temperature=0.0)
    g0, g1 = [int(t) for t in greedy[0]], [int(t) for t in greedy[1]]
    p0, p1 = [int(t) for t in PROMPT[0]], [int(t) for t in PROMPT[1]]
    prompts = [p0 + g0[:3], p1, p0, p1 + g1[:6]]  # lengths 7, 4, 4, 10
    eos = [None, g1[3], g0[0], None]
    got = sampling.greedy_ragged(model, params, prompts, [9, 5, 12, 6], eos, batch=4, length=16)
    assert got[0] == g0[3:12] and got[3] == g1[6:12]
    assert got[1] == g1[:g1.index(g1[3])] and got[2] == []  # stopped at their own stop ids
    assert sampling.prefill_bucket(3) == 3 and sampling.prefill_bucket(100) == 96
    assert sampling.prefill_bucket(386) == 384 and sampling.prefill_bucket(8) == 8
