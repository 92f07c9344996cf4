"""Objectives, optimizer pieces, and an in-process training run: workdir files, restore on
another mesh."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from lm import evaluation, objectives, optim, runs, sharding, trainer
from lm import workdir as workdir_files
from lm.config import ConfigError
from lm.objectives import language
from test_sharding import tiny_config


def test_cross_entropy_sums_match_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 5)).astype(np.float32)
    targets = rng.integers(0, 5, size=(2, 3)).astype(np.int32)
    weights = np.array([[1, 1, 0], [1, 0, 1]], np.float32)
    sums = language.cross_entropy_sums(jnp.asarray(logits), jnp.asarray(targets),
                                         jnp.asarray(weights), z_loss=0.5)
    log_z = np.log(np.exp(logits).sum(-1))
    nll = log_z - np.take_along_axis(logits, targets[..., None], -1)[..., 0]
    np.testing.assert_allclose(sums["nll_sum"], (nll * weights).sum(), rtol=1e-5)
    np.testing.assert_allclose(sums["z_sum"], 0.5 * (log_z ** 2 * weights).sum(), rtol=1e-5)
    assert float(sums["weight_sum"]) == 4.0
    assert float(sums["correct_sum"]) == ((logits.argmax(-1) == targets) * weights).sum()


def test_prefix_lm_split_is_source_half_then_teacher_forced_target_half():
    x = np.arange(9)[None]
    batch = {"inputs": x[:, :-1], "targets": x[:, 1:], "weights": np.ones((1, 8), np.float32),
             "segment_ids": np.ones((1, 8), np.int32)}
    b = language.split_prefix(batch)
    assert b["src"].tolist() == [[0, 1, 2, 3]]
    assert b["inputs"].tolist() == [[4, 5, 6, 7]] and b["targets"].tolist() == [[5, 6, 7, 8]]
    assert b["weights"].shape == (1, 4)
    with pytest.raises(ConfigError, match="'mlm' is not one of"):
        objectives.get("mlm")
    with pytest.raises(ConfigError, match="needs model.kind='encoder_decoder'"):
        runs.setup(tiny_config(train__objective="prefix_lm"))


def test_schedule_and_weight_decay_mask():
    t = tiny_config().train
    t.steps, t.warmup_steps, t.learning_rate, t.min_lr_ratio = 100, 10, 1.0, 0.1
    lr = optim.learning_rate_schedule(t)
    assert float(lr(0)) == pytest.approx(0.1) and float(lr(9)) == pytest.approx(1.0)
    assert float(lr(99)) == pytest.approx(0.1, abs=2e-3)
    t.schedule = "bogus"
    with pytest.raises(ConfigError, match="train.schedule"):
        optim.learning_rate_schedule(t)

    run = runs.setup(tiny_config(), mesh=sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}))
    params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), run.abstract_state["params"])
    mask = optim.decay_mask(params, run.param_specs)
    flat = {"/".join(str(getattr(k, "key", k)) for k in path): v
            for path, v in jax.tree_util.tree_flatten_with_path(mask)[0]}
    decayed = [k for k, v in flat.items() if v]
    assert decayed and all(np.ndim(params_leaf) >= 2 for params_leaf in [
        p for (path, p) in jax.tree_util.tree_flatten_with_path(params)[0]
        if flat["/".join(str(getattr(k, "key", k)) for k in path)]])
    assert not any("embed" in k.lower() for k in decayed)
    assert not any(k.endswith(("bias", "scale")) for k in decayed)
    assert any(k.endswith("qkv") for k in decayed) and any(k.endswith("wo") for k in decayed)
    everything = optim.decay_mask(params, run.param_specs, kind="all")
    assert all(jax.tree.leaves(everything))


def test_train_writes_workdir_and_restores_on_another_mesh(tmp_path):
    workdir = str(tmp_path / "run")
    config = tiny_config(mesh__data=2, mesh__fsdp=2, mesh__tensor=2)
    config.train.steps, config.train.log_every, config.train.eval_every = 6, 2, 3
    config.train.checkpoint_every, config.train.sample_tokens = 3, 0
    summary = trainer.train(config, workdir, progress=False)

    assert summary["step"] == 6 and summary["mesh"] == {"data": 2, "fsdp": 2, "tensor": 2}
    rows = workdir_files.read_metrics(workdir)
    assert [r["step"] for r in rows] == [2, 3, 4, 6]
    assert all({"loss", "learning_rate", "tokens_per_sec"} <= set(r) for r in rows)
    assert {"eval_loss", "eval_bits_per_byte", "eval_perplexity", "eval_accuracy"} <= set(rows[1])
    final = summary["final"]
    assert final["bits_per_byte"] == pytest.approx(final["loss"] / math.log(2))  # bytes: 1/token
    assert final["perplexity"] == pytest.approx(math.exp(final["loss"]))
    saved = json.load(open(os.path.join(workdir, "config.json")))
    assert saved["model"]["vocab_size"] == 256 and saved["train"]["steps"] == 6
    assert any(f.startswith("events") for f in os.listdir(os.path.join(workdir, "tb")))
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]

    # The checkpoint onto a different mesh (data parallel over 4 devices): same eval loss.
    run, state = runs.load_run(workdir, mesh_cfg={"data": 4, "fsdp": 1, "tensor": 1})
    assert sharding.describe(run.mesh) == {"data": 4, "fsdp": 1, "tensor": 1}
    again = evaluation.evaluate(state["params"], model=run.model, dataset=run.dataset,
                             config=run.config, split="valid")
    assert again["loss"] == pytest.approx(final["loss"], rel=1e-5)
    assert again["tokens"] == final["tokens"]

    # load_workdir: the contract's (config, model, params, dataset)
    config2, model, params, dataset = runs.load_workdir(workdir, step=3)
    assert config2.train.steps == 6 and dataset.vocab_size == 256
    assert jax.tree.structure(params) == jax.tree.structure(nn.unbox(state["params"]))


def test_a_failing_end_of_run_sample_is_a_warning_and_the_run_is_kept(tmp_path, caplog):
    config = tiny_config(mesh__data=1, data__tokenizer="char")
    t = config.train
    t.steps, t.log_every, t.eval_every, t.eval_batches, t.checkpoint_every = 2, 1, 2, 1, 2
    t.sample_tokens, t.sample_prompt = 4, "\U0001F9EA"  # not in the char vocabulary: encode raises
    workdir = str(tmp_path / "run")
    summary = trainer.train(config, workdir, progress=False)
    assert summary["step"] == 2 and summary["sample"] == ""
    assert "no end-of-run sample" in caplog.text and "not in the vocabulary" in caplog.text
    assert json.load(open(os.path.join(workdir, "summary.json")))["step"] == 2
    assert summary["entropy_rate"] is None  # stdlib text: no known entropy rate
