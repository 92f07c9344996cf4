"""lm/evals: the request API against a plain forward pass, generation stop strings, synthetic
tasks, a hand-built model with a known score, task criteria in records, and bad input.

Models here are tiny (one layer); the hand-built one has its blocks zeroed so the residual
stream is the token embedding, and its unembedding maps each token to its successor in
"abcde\\n" with logit gap 60: it continues any prompt with the successor chain, so the oracle
answer scores exact match 1 and NLL ~0, a wrong answer exact match 0 and NLL ~60 per token.
"""

import functools
import json
import math
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.core import meta

from lm import models
from lm.config import ModelConfig
from lm.data.tokenizers import CharTokenizer
from lm.evals import api, metrics, runner, tasks
from lm.evals.api import Evaluator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789+=% \n"


def _init(model, *inputs, seed=0):
    """model.init as one jitted program (op by op, a model's init compiles hundreds of ops)."""
    return jax.jit(model.init)(jax.random.PRNGKey(seed), *inputs)["params"]


def _random_evaluator(max_len=24, batch_size=4):
    tok = CharTokenizer(ALPHABET)  # one id per character: every generated id decodes
    cfg = ModelConfig(vocab_size=tok.vocab_size, max_len=max_len, d_model=16, num_layers=1, num_heads=2)
    model = models.build_model(cfg)
    params = meta.unbox(_init(model, jnp.zeros((1, max_len), jnp.int32), seed=1))
    params = jax.tree.map(lambda x: x * 3.0, params)  # sharper distributions: argmaxes are not ties
    return Evaluator(model, params, tok, batch_size=batch_size), model, params


@pytest.fixture(scope="module")
def random_ev():
    return _random_evaluator()


@functools.lru_cache(maxsize=None)
def _jitted_apply(model):
    return jax.jit(lambda params, *x: model.apply({"params": params}, *x))


def _apply(model, params, *inputs):
    return _jitted_apply(model)(params, *inputs)


def _forward_logprob(model, params, ids, n):
    """Sum of log-softmax of the last n tokens of ids, from one plain forward pass (padded on the
    right to the context, which causal attention never reads: one program for every length)."""
    x = np.zeros((1, model.cfg.max_len), np.int32)
    x[0, :len(ids) - 1] = ids[:-1]
    logits = _apply(model, params, x)[0]
    logp = np.asarray(jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1))
    pos = range(len(ids) - 1 - n, len(ids) - 1)
    greedy = all(int(np.argmax(logp[t])) == ids[t + 1] for t in pos)
    return float(sum(logp[t, ids[t + 1]] for t in pos)), greedy


def test_loglikelihood_equals_forward_pass(random_ev):
    ev, model, params = random_ev
    reqs = [("12+30=", "42"), ("hello", " world"), ("a", "bcdefgh"), ("x" * 20, "yz"), ("", "abc")]
    got = ev.loglikelihood(reqs)  # one batched call: sorted, padded to buckets, two batches
    for (ctx, cont), (ll, greedy) in zip(reqs, got):
        ctx_ids = ev.encode(ctx) or [ev.prefix_token]
        want, want_greedy = _forward_logprob(model, params, ctx_ids + ev.encode(cont), len(cont))
        assert ll == pytest.approx(want, abs=1e-4)
        assert greedy == want_greedy
    # the same request alone gives the same number as inside a batch
    assert ev.loglikelihood([reqs[1]])[0][0] == pytest.approx(got[1][0], abs=1e-5)
    if jax.device_count() >= 2:  # rows split over a data-parallel mesh, as in the trainer's eval
        from lm import sharding

        mesh = sharding.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
        sharded = Evaluator(model, jax.device_put(params, sharding.replicated(mesh)), ev.tokenizer,
                            batch_size=4, mesh=mesh)
        assert np.allclose([ll for ll, _ in sharded.loglikelihood(reqs)], [ll for ll, _ in got], atol=1e-5)
    # trailing spaces of the context move to the continuation (the harness's rule)
    assert ev.encode_pair("hello ", "world") == (ev.encode("hello"), ev.encode(" world"))


def test_encoder_decoder_scores_in_the_prefix_lm_convention():
    tok = CharTokenizer(ALPHABET)
    cfg = ModelConfig(kind="encoder_decoder", vocab_size=tok.vocab_size, max_len=16, d_model=16,
                      num_layers=1, num_heads=2)
    model = models.build_model(cfg)
    z = jnp.zeros((1, 4), jnp.int32)
    params = meta.unbox(_init(model, z, z, seed=2))
    ev = Evaluator(model, params, tok, batch_size=2)
    (ll, _), = ev.loglikelihood([("12+30=", "42")])
    ctx, cont = ev.encode("12+30="), ev.encode("42")
    logits = _apply(model, params, jnp.asarray([ctx[:-1]]), jnp.asarray([ctx[-1:] + cont[:-1]]))
    logp = np.asarray(jax.nn.log_softmax(logits[0], axis=-1))
    assert ll == pytest.approx(float(logp[0, cont[0]] + logp[1, cont[1]]), abs=1e-4)


def test_greedy_continuation_is_greedy(random_ev):
    ev, _, _ = random_ev
    text = ev.generate_until([("abc", {"max_gen_toks": 5})])[0]
    assert len(text) == 5
    ll, greedy = ev.loglikelihood([("abc", text)])[0]
    assert greedy and ll < 0


def test_rolling_windows_cover_text_once(random_ev):
    ev, model, params = random_ev
    toks = list(range(50))
    for context_len in (1, 5):
        windows = api.rolling_windows(toks, 99, 24, context_len)
        assert [t for _, c in windows for t in c] == toks
        assert all(len(c) + len(x) - 1 <= 24 for c, x in windows)
    text = "the quick brown fox jumps over the lazy dog " * 2  # 88 bytes: four windows of 24
    total = ev.loglikelihood_rolling([text])[0]
    ids = ev.encode(text)
    by_hand = sum(_forward_logprob(model, params, c + x, len(x))[0]
                  for c, x in api.rolling_windows(ids, ev.prefix_token, 24))
    assert total == pytest.approx(by_hand, rel=1e-5)


def test_generate_until_stops_at_stop_string(random_ev):
    ev, _, _ = random_ev
    free = ev.generate_until([("abc", {"max_gen_toks": 12})])[0]
    assert len(free) == 12
    stop = free[4:6]  # a two-character stop string taken from the free continuation
    cut = ev.generate_until([("abc", {"until": [stop], "max_gen_toks": 12}),
                             ("abc", {"until": free[3], "max_gen_toks": 12})])
    assert cut[0] == free[:free.index(stop)]
    assert cut[1] == free[:free.index(free[3])]


def test_prompt_longer_than_context_is_a_clear_error(random_ev):
    ev, _, _ = random_ev
    with pytest.raises(ValueError, match="longer than the model's context max_len=24"):
        ev.loglikelihood([("x" * 30, "y")])
    with pytest.raises(ValueError, match="more than the model's context max_len=24"):
        ev.generate_until([("x" * 30, {"max_gen_toks": 2})])
    # the harness's rule instead (strict=False): cut from the left
    assert ev.loglikelihood([("x" * 30, "y")], strict=False)[0][0] == pytest.approx(
        ev.loglikelihood([("x" * 24, "y")])[0][0], abs=1e-5)
    with pytest.raises(ValueError, match="task addition_5 .*context max_len=24"):
        runner.evaluate_task(ev, "addition_5", num_examples=2, num_fewshot=3)


# ----------------------------------------------------------------------------- a hand-built model

CHAIN = "abcde\n"


class ChainTask:
    """Prompts that are a stretch of the chain; the answer is the rest of it up to the newline."""

    name, multiple_choice, pass_metric = "chain", False, "exact_match"

    def __init__(self, wrong=False):
        self.wrong = wrong

    def eval_set(self, n, num_fewshot=0, seed=0):
        out = []
        for i in range(n):
            k = 1 + i % 3
            answer = CHAIN[k:5]
            out.append(tasks.Example(CHAIN[:k], answer[::-1] if self.wrong else answer))
        return out


def _successor_evaluator():
    tok = CharTokenizer(CHAIN)  # ids in sorted order: '\n' a b c d e
    V = tok.vocab_size
    cfg = ModelConfig(vocab_size=V, max_len=16, d_model=V, num_layers=1, num_heads=1, position="none",
                      tie_embeddings=False)
    model = models.build_model(cfg)
    params = meta.unbox(_init(model, jnp.zeros((1, 4), jnp.int32)))
    params = jax.tree.map(jnp.zeros_like, params)  # blocks add nothing: the residual is the embedding
    nxt = {c: CHAIN[(i + 1) % len(CHAIN)] for i, c in enumerate(CHAIN)}
    ids = {c: int(tok.encode(c)[0]) for c in CHAIN}
    unembed = np.zeros((V, V), np.float32)
    for c in CHAIN:
        unembed[ids[c], ids[nxt[c]]] = 60.0 / math.sqrt(V)
    params["embed"]["embedding"] = jnp.eye(V) * 5.0
    params["unembed"] = jnp.asarray(unembed)
    for norm in ("final_norm",):
        params[norm]["scale"] = jnp.ones(V)
    return Evaluator(model, params, tok, batch_size=4)


def test_oracle_answers_score_exact_match_one_and_nll_zero():
    ev = _successor_evaluator()
    good = runner.evaluate_task(ev, ChainTask(), num_examples=6)
    assert good["exact_match"] == 1.0 and good["per_token_accuracy"] == 1.0
    assert good["edit_distance"] == 0.0
    assert good["answer_nll"] < 1e-3 and good["answer_bits"] == pytest.approx(good["answer_nll"] / math.log(2))
    bad = runner.evaluate_task(ev, ChainTask(wrong=True), num_examples=6, sample_temperature=1.0)
    assert bad["exact_match"] < 1.0 and bad["answer_nll"] > 10.0
    # a logit gap of 60: sampling at temperature 1 gives the greedy answers
    assert bad["sampled_exact_match"] == bad["exact_match"] and "sampled_valid" not in bad
    # multiple choice through loglikelihood: the right choice has probability ~1
    lls = [ll for ll, _ in ev.loglikelihood([("ab", "cde"), ("ab", "dce")])]
    assert metrics.brier(lls, 0) < 1e-6 and metrics.brier(lls, 1) == pytest.approx(2.0, abs=1e-6)


# ----------------------------------------------------------------------------- tasks

def test_tasks_are_deterministic_and_correct():
    for name in tasks.known_tasks():
        t = tasks.get_task(name)
        a, b = t.examples(6, seed=1), t.examples(6, seed=1)
        assert a == b and a != t.examples(6, seed=2), name
        assert t.examples(3, seed=1) == a[:3]  # example i does not depend on how many are asked
        assert t.eval_set(4, num_fewshot=2, seed=1) == t.eval_set(4, num_fewshot=2, seed=1)
        shot = t.eval_set(1, num_fewshot=2, seed=1)[0]
        assert shot.prompt.endswith(a[0].prompt) and shot.prompt.count(tasks.STOP) >= 2
    for e in tasks.get_task("addition_3").examples(20, seed=3):
        x, y = e.prompt[:-1].split("+")
        assert len(x) == len(y) == 3 and int(e.answer) == int(x) + int(y)
    for e in tasks.get_task("addition_rev_4").examples(20, seed=3):
        x, y = e.prompt[:-1].split("+")
        assert int(e.answer[::-1]) == int(x[::-1]) + int(y[::-1])
    for e in tasks.get_task("modular_7").examples(20, seed=3):
        expr = e.prompt[:-1].split("%")[0]
        assert int(e.answer) == eval(expr) % 7
    parity = tasks.get_task("sparse_parity_6_2")
    for e in parity.examples(20):
        assert e.answer == str(sum(int(e.prompt[i]) for i in parity.hidden) % 2) and e.choices == ("0", "1")
    docs = tasks.corpus("addition_2,copy_4", 2000, seed=0)
    assert docs == tasks.corpus("addition_2,copy_4", 2000, seed=0) and sum(map(len, docs)) >= 2000
    assert docs != tasks.corpus("addition_2,copy_4", 2000, seed=0, split="valid")
    assert tasks.get_task("addition").name == "addition_3"


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown task 'additoin_3'; known tasks: .*addition_<digits>"):
        tasks.get_task("additoin_3")
    with pytest.raises(ValueError, match="relevant=9 bits cannot exceed bits=4"):
        tasks.get_task("sparse_parity_4_9")
    with pytest.raises(ValueError, match="at most 1 parameter"):
        tasks.get_task("copy_3_4")
    from lm.evals import criteria

    assert criteria.history_key("task:addition_3/exact_match") == "eval_task/addition_3/exact_match"
    assert criteria.surrogate_key("task:addition_3/exact_match") == "task/addition_3/answer_nll"
    assert criteria.surrogate_key("accuracy") == "loss" and criteria.final_key("loss") == "loss"
    with pytest.raises(ValueError, match="write the task's full name, task:addition_3/exact_match"):
        criteria.parse("task:addition/exact_match")
    with pytest.raises(ValueError, match="metric one of"):
        criteria.parse("task:addition_3/f1")


def test_sampled_metrics_sample_seeded_and_check_validity(random_ev, monkeypatch):
    ev, calls = random_ev[0], []
    generate = ev.generate_until

    def recording(requests, **kw):
        calls.append([dict(r[1]) for r in requests])
        return generate(requests, **kw)

    monkeypatch.setattr(ev, "generate_until", recording)
    a = runner.evaluate_task(ev, "addition_2", num_examples=8, seed=3, sample_temperature=1.5)
    assert a == runner.evaluate_task(ev, "addition_2", num_examples=8, seed=3, sample_temperature=1.5)
    plain = runner.evaluate_task(ev, "addition_2", num_examples=8, seed=3)
    assert [len(c) for c in calls] == [8, 8, 8, 8, 8]  # greedy + sampled, twice; greedy only
    assert all(r["temperature"] == 1.5 and r["seed"] == 3 for r in calls[1]) and "temperature" not in calls[0][0]
    assert 0.0 <= a["sampled_exact_match"] <= 1.0 and "sampled_valid" not in a and "sampled_exact_match" not in plain
    sort = tasks.get_task("sort_5")
    ex = sort.examples(1)[0]
    assert sort.valid(ex, ex.answer[::-1] + "\n") and sort.valid(ex, ex.answer)
    assert not sort.valid(ex, ex.answer[:4]) and not sort.valid(ex, ex.answer[:4] + ex.answer[0])
    assert tasks.get_task("addition_3").valid is None
    assert metrics.sampled(["ab\n", "ba"], ["ab", "ab"], [True, False]) == {
        "sampled_exact_match": 0.5, "sampled_valid": 0.5}
    with pytest.raises(ValueError, match="sample_temperature must be >= 0"):
        runner.evaluate_task(ev, "addition_2", num_examples=2, sample_temperature=-1.0)


def test_metrics_by_hand():
    assert metrics.edit_distance("kitten", "sitting") == 3
    assert metrics.edit_distance("", "abc") == 3 and metrics.edit_distance("abc", "abc") == 0
    assert metrics.brier([math.log(0.75), math.log(0.25)], 0) == pytest.approx(0.125)


# ----------------------------------------------------------------------------- the command line

def _lm(*args, cwd=REPO):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "lm", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def test_cli_unknown_task_is_one_line(tmp_path):
    out = _lm("eval", f"--workdir={tmp_path}", "--tasks=addition_3,nope")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "lm eval: error: unknown task 'nope'; " + tasks._help()]


# ----------------------------------------------------------------------------- criteria on tasks

EXPERIMENT = """
from lm.config import base_config
from lm.experiment import apply_rung, ladder


def get_config(arg=None):
    c = base_config()
    c.data.update(source="tasks", tasks="addition_1,copy_2", train_tokens=4000, eval_tokens=600)
    c.model.update(max_len=32, d_model=16, num_layers=1, num_heads=2)
    c.train.update(steps=4, batch_size=8, warmup_steps=1, log_every=2, eval_every=2, eval_batches=1,
                   checkpoint_every=0, sample_tokens=0)
    c.evals.update(tasks="{tasks}", num_examples=8, num_fewshot=0)  # one prompt length: one compile
    c.experiment.update(name="task_criterion", hypothesis="h", metric="task:addition_1/exact_match",
                        comparator=">=", threshold=0.99)
    c.experiment.ladder = ladder(r0={{"train.steps": 4}})
    return apply_rung(c, arg)
"""


def test_task_criterion_flows_into_record_verdict_and_report(tmp_path):
    from lm import archive, experiment
    from lm.config import ConfigError

    bad = tmp_path / "bad.py"
    bad.write_text(EXPERIMENT.format(tasks="copy_2"))
    with pytest.raises(ConfigError, match="needs task 'addition_1' in evals.tasks"):
        experiment.load_config(str(bad), "r0")
    path = tmp_path / "exp.py"
    path.write_text(EXPERIMENT.format(tasks="addition_1"))
    arch = str(tmp_path / "archive")
    record, out = experiment.run(str(path), "r0", archive_dir=arch, progress=False)
    final = record["final"]
    assert record["metric_value"] == final["task/addition_1/exact_match"]
    assert record["surrogate_value"] == final["task/addition_1/answer_nll"] > 0
    evals = [h for h in record["history"] if "eval_loss" in h]
    assert [h["step"] for h in evals] == [2, 4]
    assert all(math.isfinite(h["eval_task/addition_1/answer_nll"]) for h in evals)
    assert record["verdict"] in ("not_yet", "passed")
    assert "task:addition_1/exact_match" in record["reason"]
    text = archive.report(archive.load_records(arch), str(tmp_path / "report"))
    assert "task:addition_1/exact_match" in text
