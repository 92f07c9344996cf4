"""nanoGPT's switches: init scheme, decay mask, random-window sampling (and its eval estimate)."""

import math

import jax
import numpy as np
import pytest

from lm import models, optim
from lm.config import ConfigError, ModelConfig
from lm.data import batches
from lm.data.dataset import build_dataset, data_config


def _flat(tree):
    return {"/".join(str(getattr(k, "key", k)) for k in path): v
            for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _params(**kw):
    cfg = ModelConfig(vocab_size=65, max_len=64, d_model=128, num_layers=4, num_heads=4, **kw)
    model = models.build_model(cfg)
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), np.zeros((1, 8), np.int32))  # one program
    return cfg, jax.tree.map(np.asarray, nn_unbox(variables["params"]))


def nn_unbox(tree):
    from flax import linen as nn
    return nn.unbox(tree)


@pytest.mark.parametrize("scheme, pos_std", [("nanogpt", 0.02), ("default", 0.01)])
def test_init_scheme_gives_the_stated_std_per_parameter(scheme, pos_std):
    cfg, params = _params(init_scheme=scheme, use_bias=True)
    resid = 0.02 / math.sqrt(2 * cfg.num_layers)  # GPT-2's scaled residual projections
    seen = set()
    for name, p in _flat(params).items():
        leaf = name.split("/")[-1]
        if leaf in ("scale",):
            want = "ones"
        elif "bias" in leaf or leaf in ("bi", "bo"):
            want = "zeros"
        elif name.startswith("pos_embed"):
            want = pos_std
        elif leaf in ("out", "wo"):
            want = resid
        else:  # token embedding (tied unembedding), qkv, mlp/wi
            want = 0.02
        seen.add(leaf)
        if want == "ones":
            assert np.all(p == 1), name
        elif want == "zeros":
            assert np.all(p == 0), name
        else:
            assert abs(p.mean()) < 3 * want / math.sqrt(p.size), name
            assert p.std() == pytest.approx(want, rel=0.05), name
    assert {"embedding", "qkv", "out", "wi", "wo", "scale", "bias", "qkv_bias", "bo"} <= seen
    with pytest.raises(ConfigError, match="model.init_scheme"):
        ModelConfig(init_scheme="xavier")


# nanoGPT's configure_optimizers: p.dim() >= 2 decays. Its 2-D params are wte (tied lm_head), wpe,
# c_attn, attn c_proj, c_fc, mlp c_proj; ours are the same tensors (qkv [D, 3, H, E], out [H, E, D]).
NANOGPT_DECAYED = {"embed/embedding", "pos_embed/embedding"} | {
    f"decoder/layer_{i}/{m}" for i in range(4)
    for m in ("attn/qkv", "attn/out", "mlp/wi", "mlp/wo")}


@pytest.mark.parametrize("scan", [False, True])
def test_nanogpt_decay_mask_covers_exactly_the_two_d_weights(scan):
    from lm import runs, sharding
    from test_sharding import tiny_config

    config = tiny_config(model__num_layers=4, model__use_bias=True, model__position="learned",
                         model__scan_layers=scan, train__decay_mask="nanogpt")
    run = runs.setup(config, mesh=sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}))
    params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), run.abstract_state["params"])
    mask = _flat(optim.decay_mask(params, run.param_specs, kind="nanogpt"))
    decayed = {k for k, v in mask.items() if v}
    if scan:  # stacked layers: one entry per weight, the 'layers' axis in front
        want = {k for k in NANOGPT_DECAYED if "layer_" not in k} | {
            f"decoder/layers/block_0/{m}" for m in ("attn/qkv", "attn/out", "mlp/wi", "mlp/wo")}
    else:
        want = NANOGPT_DECAYED
    assert decayed == want
    assert any(k.endswith("bias") for k in mask) and any(k.endswith("scale") for k in mask)
    # the default mask is the same minus the embeddings; 'all' is everything
    default = {k for k, v in _flat(optim.decay_mask(params, run.param_specs)).items() if v}
    assert default == {k for k in want if "embed" not in k}
    assert all(_flat(optim.decay_mask(params, run.param_specs, kind="all")).values())
    with pytest.raises(ConfigError, match="train.decay_mask"):
        optim.decay_mask(params, run.param_specs, kind="most")


def _windows(**kw):
    cfg = data_config(source="markov", sampling="random_windows", train_tokens=4000,
                      eval_tokens=1000, **kw)
    return build_dataset(cfg, 16, seed=0)


def _take(it, n):
    return [next(it) for _ in range(n)]


def test_random_windows_are_deterministic_per_seed_and_uniform():
    ds = _windows()
    a = _take(ds.train_iterator(8, seed=3), 4)
    b = _take(ds.train_iterator(8, seed=3), 4)
    c = _take(ds.train_iterator(8, seed=4), 4)
    for x, y in zip(a, b):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    assert any(not np.array_equal(x["inputs"], y["inputs"]) for x, y in zip(a, c))
    # every row is T+1 consecutive tokens of the stream, starting where the hash says
    tokens, n = ds.tokens("train"), len(ds.tokens("train"))
    starts = batches.window_starts(np.arange(32), 3, 0, n - 16)
    rows = np.concatenate([np.concatenate([x["inputs"], x["targets"][:, -1:]], 1) for x in a])
    np.testing.assert_array_equal(rows, tokens[starts[:, None] + np.arange(17)])
    # uniform over all n - T starts: the last start is reachable, nothing beyond it
    many = batches.window_starts(np.arange(200_000), 0, 0, n - 16)
    counts = np.bincount(many, minlength=n - 16)
    assert len(counts) == n - 16 and counts.min() > 0
    assert counts.std() / counts.mean() < 0.2  # Poisson noise at mean ~50 is 0.14


def test_random_windows_resume_exactly_and_split_disjointly_over_processes():
    ds = _windows()
    it = ds.train_iterator(8, seed=1)
    _take(it, 3)
    state = it.state()
    rest = _take(it, 3)
    again = ds.train_iterator(8, seed=1)
    again.restore(state)
    for x, y in zip(rest, _take(again, 3)):
        np.testing.assert_array_equal(x["inputs"], y["inputs"])
    # two processes take the two halves of the one global batch
    whole = next(ds.train_iterator(8, seed=1))
    halves = [next(ds.train_iterator(8, seed=1, process_index=p, process_count=2)) for p in (0, 1)]
    np.testing.assert_array_equal(np.concatenate([h["inputs"] for h in halves]), whole["inputs"])


def test_random_window_eval_is_a_fixed_estimate_and_zero_batches_is_the_whole_split():
    ds = _windows()
    first = list(ds.eval_batches("valid", 4, max_batches=3))
    second = list(ds.eval_batches("valid", 4, max_batches=3))
    assert len(first) == 3 and all(b["weights"].sum() == 4 * 16 for b in first)
    for x, y in zip(first, second):
        np.testing.assert_array_equal(x["inputs"], y["inputs"])
    # not the in-order rows of the packed eval
    ordered = next(ds.eval_batches("valid", 4, max_batches=0))
    assert not np.array_equal(first[0]["inputs"], ordered["inputs"])
    np.testing.assert_array_equal(ordered["inputs"][0], ds.tokens("valid")[:16])
    whole = list(ds.eval_batches("valid", 4, max_batches=0))
    assert sum(b["weights"].sum() for b in whole) == len(ds.tokens("valid")) - 1
    with pytest.raises(ConfigError, match="data.sampling"):
        build_dataset(data_config(source="markov", sampling="shuffled"), 16)


def test_wsd_schedule_and_muon_dimensions():
    from lm import runs, sharding
    from test_sharding import tiny_config

    t = tiny_config().train
    t.steps, t.warmup_steps, t.learning_rate, t.min_lr_ratio = 100, 10, 1.0, 0.0
    t.schedule, t.cooldown_fraction = "wsd", 0.3
    lr = optim.learning_rate_schedule(t)
    assert float(lr(9)) == pytest.approx(1.0) and float(lr(69)) == pytest.approx(1.0)
    assert float(lr(85)) == pytest.approx(0.5, abs=0.04) and float(lr(99)) == pytest.approx(0.0, abs=0.04)

    config = tiny_config(model__num_layers=2, model__mlp="swiglu", train__optimizer="muon")
    run = runs.setup(config, mesh=sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}))
    params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), run.abstract_state["params"])
    dims = optim.muon_dimensions(params, run.param_specs)
    leaves = jax.tree_util.tree_flatten_with_path(
        dims, is_leaf=lambda x: x is None or hasattr(x, "reduction_axis"))[0]
    flat = {"/".join(str(getattr(k, "key", k)) for k in path): v for path, v in leaves}
    assert flat.keys() == _flat(params).keys()
    got = {k.split("/", 2)[-1]: (tuple(v.reduction_axis), tuple(v.output_axis))
           for k, v in flat.items() if v is not None and "layer_0" in k}
    # qkv [D, 3, H, E]: D -> (H, E) per q/k/v; out [H, E, D]; wi [D, 2, F] per gate/up; wo [F, D]
    assert got == {"attn/qkv": ((0,), (2, 3)), "attn/out": ((0, 1), (2,)),
                   "mlp/wi": ((0,), (2,)), "mlp/wo": ((0,), (1,))}
    assert all(v is None for k, v in flat.items() if "embed" in k or "norm" in k)


def test_reproduce_rung_trains_exactly_like_nanogpt():
    """nanoGPT's own torch run (scripts/nanogpt_parity.py --fixture: its initial weights, its
    get_batch windows, its losses and final weights) replayed through the reproduce rung's
    train step: equal to float32 round-off at every step, so lm's nanoGPT settings are its math."""
    import os
    from flax import traverse_util
    from lm import runs, sharding, trainer
    from lm.experiment import load_config

    here = os.path.dirname(__file__)
    fx = np.load(os.path.join(here, "fixtures", "nanogpt", "parity.npz"))
    shakespeare = os.path.join(here, "..", "..", "shared", "data", "tinyshakespeare", "input.txt")
    if not os.path.exists(shakespeare):  # nanoGPT's own text and vocabulary; no download in tests
        pytest.skip(f"tiny Shakespeare not found at {os.path.normpath(shakespeare)}")
    config = load_config(os.path.join(here, "..", "experiments", "shakespeare_char.py"), "reproduce",
                         [*fx["sets"], f"data.path={shakespeare}"])
    mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1})
    run = runs.setup(config, mesh=mesh)

    def tree(tag):  # the fixture's "init/decoder/layer_0/..." keys as a params tree
        return traverse_util.unflatten_dict(
            {k.split("/", 1)[1]: fx[k] for k in fx.files if k.startswith(tag + "/")}, sep="/")

    with sharding.activate(mesh):
        state = runs.init_state(run, jax.device_put(tree("init"), run.param_shardings))
    step = trainer.make_train_step(run)
    ones = np.ones(fx["inputs"].shape[1:], np.int32)
    losses = []
    for x, y in zip(fx["inputs"], fx["targets"]):
        batch = {"inputs": x.astype(np.int32), "targets": y.astype(np.int32),
                 "weights": ones.astype(np.float32), "segment_ids": ones}
        state, metrics = step(state, jax.device_put(batch, sharding.batch_sharding(mesh)))
        losses.append(float(metrics["loss"]))
    np.testing.assert_allclose(losses, fx["losses"], atol=1e-5)
    assert losses[-1] < losses[0] - 0.2  # it learned, so the match is not two frozen models
    final = jax.tree.map(np.asarray, state["params"])
    for (path, ours), theirs in zip(jax.tree_util.tree_flatten_with_path(final)[0],
                                    jax.tree.leaves(tree("final"))):
        np.testing.assert_allclose(ours, theirs, atol=1e-5, err_msg=jax.tree_util.keystr(path))
