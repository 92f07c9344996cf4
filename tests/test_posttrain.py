"""Post-training: SFT data (loss on responses only, packing) and DPO (loss, gradient, sharding, resume)."""

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm import models, objectives, runs, trainer
from lm.config import ConfigError, base_config, model_config
from lm.data import build_dataset, pairs
from lm.objectives import preference
from lm.objectives.base import Context
from test_trainer_cli import train_killed_after

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def dpo_config(steps=6, **train):
    c = base_config()
    c.model.update(d_model=32, num_heads=2, num_layers=2, max_len=24)
    c.data.update(source="preference", path="synthetic:sorted", train_tokens=2048, eval_tokens=512)
    c.train.update(dict(dict(objective="dpo", steps=steps, batch_size=8, eval_every=0, log_every=1,
                             sample_tokens=0, warmup_steps=1, checkpoint_every=3, eval_batches=2), **train))
    c.mesh.update(data=1, fsdp=1, tensor=1)  # one device unless a test says otherwise
    return c


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


# ----------------------------------------------------------------------------- data

def test_sft_packing_puts_loss_on_responses_only():
    tok_p, tok_r = np.array([5, 6, 7]), np.array([8, 9])
    table = pairs.pack_examples([(tok_p, tok_r), (np.array([1, 2]), np.array([3]))], seq_len=12)
    assert table["inputs"].shape == (1, 12)
    # tokens: 5 6 7 8 9 | 1 2 3 ; targets are the next tokens; responses 8 9 and 3
    np.testing.assert_array_equal(table["inputs"][0, :7], [5, 6, 7, 8, 9, 1, 2])
    np.testing.assert_array_equal(table["targets"][0, :7], [6, 7, 8, 9, 1, 2, 3])
    np.testing.assert_array_equal(table["weights"][0, :7], [0, 0, 1, 1, 0, 0, 1])
    np.testing.assert_array_equal(table["segment_ids"][0, :8], [1, 1, 1, 1, 1, 2, 2, 0])
    assert table["weights"][0, 7:].sum() == 0  # padding carries no loss


def test_sft_dataset_from_jsonl_with_chat_template(tmp_path):
    rows = [{"q": f"say {i}", "a": f"{i}!"} for i in range(30)]
    c = base_config()
    c.data.update(source="sft", path=write_jsonl(tmp_path / "sft.jsonl", rows), prompt_field="q",
                  response_field="a", template="chat", document_masking=True)
    ds = build_dataset(c.data, 64)
    batch = next(ds.train_iterator(4, seed=0))
    text = ds.tokenizer.decode(batch["targets"][0][batch["weights"][0] > 0])
    assert "### End" in text and "### User" not in text and "say" not in text


def test_prompt_and_padding_tokens_carry_no_loss():
    c = dpo_config()
    ds = build_dataset(c.data, c.model.max_len)
    batch = next(ds.train_iterator(4, seed=0))
    mcfg = dataclasses.replace(model_config(c), vocab_size=ds.vocab_size)
    model = models.build_model(mcfg)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 24), jnp.int32))["params"]
    ref = jax.tree.map(lambda x: x * 0.9, params)
    dpo_sums = jax.jit(lambda b: preference.dpo_sums(model, params, ref, b, beta=0.1)[0])
    base = dpo_sums(batch)
    changed = dict(batch)
    for side in preference.PAIR_SIDES:  # scramble every token after the end of each row
        pad = batch[f"{side}_segment_ids"] == 0
        changed[f"{side}_inputs"] = np.where(pad, 3, batch[f"{side}_inputs"])
        changed[f"{side}_targets"] = np.where(pad, 4, batch[f"{side}_targets"])
    again = dpo_sums(changed)
    np.testing.assert_allclose(again["dpo_sum"], base["dpo_sum"], rtol=1e-6)
    # prompt targets have weight 0: the scored tokens decode to the answers only
    w = batch["chosen_weights"][0] > 0
    answer = ds.tokenizer.decode(batch["chosen_targets"][0][w])
    assert answer.endswith("\n") and "Q:" not in answer and pairs.is_sorted_answer(answer)


def test_awkward_examples_are_dropped_by_stated_rules_and_bad_input_is_one_line(tmp_path, caplog):
    good = {"prompt": "p", "chosen": "yes", "rejected": "no"}
    rows = [{"prompt": "p", "chosen": "same", "rejected": "same"},
            {"prompt": "p", "chosen": "", "rejected": "x"},
            {"prompt": "p" * 100, "chosen": "a", "rejected": "b"}] + [good] * 9  # valid: the last one
    c = base_config()
    c.data.update(source="preference", path=write_jsonl(tmp_path / "p.jsonl", rows))
    ds = build_dataset(c.data, 16)
    assert ds.num_rows("train") + ds.num_rows("valid") == 9
    assert all(why in caplog.text for why in ("chosen equals rejected", "empty response", "longer than"))
    with pytest.raises(ConfigError, match=r"missing text field\(s\) \['chosen'\]"):
        c.data.path = write_jsonl(tmp_path / "m.jsonl", [{"prompt": "p", "rejected": "r"}] * 3)
        build_dataset(c.data, 16)
    with pytest.raises(ConfigError, match="no usable examples"):
        c.data.path = write_jsonl(tmp_path / "long.jsonl", [{"prompt": "p" * 50, "chosen": "a", "rejected": "b"}] * 3)
        build_dataset(c.data, 16)
    with pytest.raises(ConfigError, match="does not exist"):
        c.data.path = str(tmp_path / "nope.jsonl")
        build_dataset(c.data, 16)
    sft = base_config()
    sft.data.update(source="sft", path="synthetic:sorted")
    with pytest.raises(ConfigError, match="document_masking=True"):
        build_dataset(sft.data, 16)
    mismatch = dpo_config()
    mismatch.data.source = "stdlib"
    with pytest.raises(ConfigError, match="go together"):
        runs.setup(mismatch)


# ----------------------------------------------------------------------------- the DPO objective

def _row_logp(model, p, batch, side, i):
    """log p(response) of one row: one plain forward pass, summed over the weighted targets."""
    x = batch[f"{side}_inputs"][i:i + 1]
    lp = jax.nn.log_softmax(model.apply({"params": p}, x)[0], axis=-1)
    t, w = batch[f"{side}_targets"][i], batch[f"{side}_weights"][i]
    return jnp.sum(lp[jnp.arange(len(t)), t] * w)


def _direct_dpo(model, params, ref, batch, beta, eps):
    """The formula transcribed row by row: log-probs from one plain forward pass per sequence."""
    logp = lambda p, side, i: _row_logp(model, p, batch, side, i)
    total = 0.0
    for i in range(len(batch["chosen_inputs"])):
        z = beta * ((logp(params, "chosen", i) - logp(ref, "chosen", i))
                    - (logp(params, "rejected", i) - logp(ref, "rejected", i)))
        total = total - (1 - eps) * jax.nn.log_sigmoid(z) - eps * jax.nn.log_sigmoid(-z)
    return total


def test_dpo_loss_and_gradient_equal_a_direct_transcription():
    c = dpo_config()
    ds = build_dataset(c.data, c.model.max_len)
    batch = {k: jnp.asarray(v) for k, v in next(ds.train_iterator(3, seed=1)).items()}
    mcfg = dataclasses.replace(model_config(c), vocab_size=ds.vocab_size)
    model = models.build_model(mcfg)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 24), jnp.int32))["params"]
    ref = model.init(jax.random.PRNGKey(1), jnp.zeros((1, 24), jnp.int32))["params"]

    def ours(p):  # padding inside a row is masked by segment ids, as in training
        return preference.dpo_sums(model, p, ref, batch, beta=0.3, label_smoothing=0.1)[0]["dpo_sum"]

    def direct(p):  # no segment ids: causal attention alone, padding sits after the sequence
        return _direct_dpo(model, p, ref, batch, 0.3, 0.1)

    ours, direct = jax.jit(jax.value_and_grad(ours)), jax.jit(jax.value_and_grad(direct))
    (v1, g1), (v2, g2) = ours(params), direct(params)
    np.testing.assert_allclose(v1, v2, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """One uninterrupted 6-step DPO run on one device: the reference of the tests below. It also
    samples sort_5 answers at its final eval, as dpo_sorted.py does (training is unaffected)."""
    workdir = str(tmp_path_factory.mktemp("dpo") / "straight")
    c = dpo_config(steps=6)
    c.evals.update(tasks="sort_5", num_examples=4, sample_temperature=1.0)
    return workdir, trainer.train(c, workdir, progress=False)


def test_step_zero_loss_is_ln2_and_margin_zero(straight):
    _, summary = straight
    first, final = summary["history"][0], summary["final"]
    assert first["step"] == 1
    assert abs(first["loss"] - math.log(2)) < 1e-6
    assert first["reward_margin"] == 0.0 and first["kl"] < 1e-6
    assert 0.0 <= final["preference_accuracy"] <= 1.0 and final["pairs"] > 0
    # the sampled rates reach the final metrics (and so the record): multiples of 1/4 here
    for key in ("task/sort_5/sampled_exact_match", "task/sort_5/sampled_valid"):
        assert final[key] * 4 == round(final[key] * 4) and 0.0 <= final[key] <= 1.0


def test_dpo_sharded_over_8_devices_equals_one_device(tmp_path, straight):
    c = dpo_config(steps=6)
    c.mesh.update(data=2, fsdp=2, tensor=2)
    eight = trainer.train(c, str(tmp_path / "eight"), progress=False)
    losses = {name: [r["loss"] for r in s["history"]] + [s["final"]["loss"]]
              for name, s in (("one", straight[1]), ("eight", eight))}
    np.testing.assert_allclose(losses["eight"], losses["one"], rtol=2e-5)


def test_dpo_resumes_exactly_after_kill_9(tmp_path, straight):
    cfg_file = tmp_path / "dpo_cfg.py"
    cfg_file.write_text(
        "import sys\nsys.path.insert(0, %r)\nfrom test_posttrain import dpo_config\n"
        "def get_config(arg=None):\n    return dpo_config(steps=6)\n" % os.path.dirname(__file__))
    env = dict(os.environ, PYTHONPATH=ROOT)

    def run(workdir):
        return subprocess.run([sys.executable, "-m", "lm", "train", f"--config={cfg_file}", f"--workdir={workdir}",
                               "--noprogress"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)

    killed = train_killed_after(5, "from test_posttrain import dpo_config\nconfig = dpo_config(steps=6)",
                                tmp_path / "a", env)  # checkpoint at 3, killed after 5
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert run(tmp_path / "a").returncode == 0
    _, _, resumed, _ = runs.load_workdir(str(tmp_path / "a"), for_eval=True)
    _, _, direct, _ = runs.load_workdir(straight[0], for_eval=True)
    for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(direct)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert straight[1]["step"] == 6


# ----------------------------------------------------------------------------- RPO: DPO + SFT on the chosen answer

def _tiny_pair_model(c):
    ds = build_dataset(c.data, c.model.max_len)
    batch = {k: jnp.asarray(v) for k, v in next(ds.train_iterator(3, seed=1)).items()}
    model = models.build_model(dataclasses.replace(model_config(c), vocab_size=ds.vocab_size))
    init = lambda seed: model.init(jax.random.PRNGKey(seed), jnp.zeros((1, 24), jnp.int32))["params"]
    return model, init(0), init(1), batch


def test_rpo_loss_is_dpo_plus_the_chosen_answers_nll_per_token_by_hand():
    c = dpo_config(objective="rpo", rpo_alpha=0.7, dpo_beta=0.3)
    model, params, ref, batch = _tiny_pair_model(c)
    rpo = objectives.get("rpo")
    sums = jax.jit(lambda p: rpo.train_sums(Context(model, c.train, False), p, ref, batch)[0])(params)
    sft = 0.0
    for i in range(len(batch["chosen_inputs"])):  # -log p(chosen) / its length, pair by pair
        n = float(jnp.sum(batch["chosen_weights"][i]))
        sft += -float(_row_logp(model, params, batch, "chosen", i)) / n if n else 0.0
    dpo = float(_direct_dpo(model, params, ref, batch, 0.3, 0.0))
    np.testing.assert_allclose(float(rpo.loss_sum(sums, c.train)), dpo + 0.7 * sft, rtol=1e-5)
    np.testing.assert_allclose(float(objectives.get("dpo").loss_sum(sums, c.train)), dpo, rtol=1e-5)
    with pytest.raises(ConfigError, match="rpo_alpha"):
        runs.setup(dpo_config(objective="rpo", rpo_alpha=-1.0))


def test_rpo_trains_and_the_chosen_answer_gets_likelier(tmp_path):
    summary = trainer.train(dpo_config(steps=5, objective="rpo", checkpoint_every=0),
                            str(tmp_path / "rpo"), progress=False)
    first, last = summary["history"][0], summary["history"][-1]
    # step 1: policy = reference, so the loss is ln 2 plus alpha (1.0) times the chosen NLL
    assert first["loss"] == pytest.approx(math.log(2) + first["chosen_nll"], rel=1e-5)
    assert last["chosen_logp"] > first["chosen_logp"] and last["loss"] < first["loss"]
    assert "DPO part" in trainer.summary_line(summary) and summary["final"]["pairs"] > 0
