"""GPU / TPU readiness checked from a CPU host: the real train step lowered for "cuda" and "tpu"
(jax.jit(f).trace(...).lower(lowering_platforms=...)), the backend choice, the dtype policy,
remat residuals, divisibility errors, and two processes with tensor parallelism across them."""

import os
import re
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm import attention as A
from lm import fast_attention, precision, runs, sharding, trainer
from lm import workdir as workdir_files
from lm.config import ConfigError, ModelConfig, base_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
B, T = 8, 256  # splash needs lengths that are multiples of 128


@pytest.fixture
def fake_cudnn(monkeypatch):
    # jax asks the installed cuDNN for its version while TRACING the cuDNN call, and a CPU-only
    # jaxlib has none. Lowering for "cuda" never runs cuDNN, so the test (only the test) says
    # 9.10 is installed; a real GPU run goes through the real check.
    from jax._src.cudnn import fused_attention_stablehlo as fa
    monkeypatch.setattr(fa, "check_cudnn_version", lambda: 91000)


def small_config(mesh=None, data=None, **model):
    c = base_config()
    c.data.update(source="markov", train_tokens=20_000, eval_tokens=4_000, **(data or {}))
    c.model.update(dict(d_model=128, num_heads=2, num_layers=2, max_len=T, dtype="bfloat16"))
    c.model.update(model)
    c.train.batch_size = B
    c.mesh.update(mesh or dict(data=1, fsdp=1, tensor=1))
    return c


def lower_train_step(platform, config):
    run = runs.setup(config)
    step = trainer.make_train_step(run)
    bs = sharding.batch_sharding(run.mesh)
    batch = {k: jax.ShapeDtypeStruct((B, T), jnp.float32 if k == "weights" else jnp.int32,
                                     sharding=bs)
             for k in ("inputs", "targets", "weights", "segment_ids")}
    with sharding.activate(run.mesh):
        return step.trace(run.abstract_state, batch).lower(lowering_platforms=(platform,)).as_text()


def custom_calls(text):
    return set(re.findall(r"custom_call @([\w$]+)", text))


def f32_weight_dots(text):
    """f32 x f32 dot_generals without batch dims: the shape of every weight matmul (forward
    and both backward ones). Attention's own batched dots (and splash's f32 row sums) are not."""
    return [line.strip()[-200:] for line in text.splitlines()
            if "dot_general" in line and "batching_dims" not in line
            and re.search(r"\(tensor<[\dx]+xf32>, tensor<[\dx]+xf32>\)", line)]


CASES = {  # name: (model overrides, data overrides)
    "plain": ({}, {}),
    "gqa+document_masking": ({"num_heads": 4, "num_kv_heads": 2, "position": "rope"},
                             {"document_masking": True}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_train_step_lowers_for_cuda_with_cudnn_flash_attention(fake_cudnn, case, monkeypatch):
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")  # 'auto' resolves as on a GPU
    # ... on a Hopper GPU (cuDNN's packed segment layout for document masking needs sm90)
    from jax._src.cudnn import fused_attention_stablehlo as fa
    monkeypatch.setattr(fa, "check_compute_capability", lambda capability: True)
    monkeypatch.setattr(fast_attention, "gpu_capability", lambda: 9.0)
    model, data = CASES[case]
    text = lower_train_step("cuda", small_config(data=data, dtype="auto", **model))
    # document masking too: cuDNN's packed segments, no [B,1,T,T] bias and no dbias
    assert {"__cudnn$fmhaSoftmax", "__cudnn$fmhaSoftmaxBackward"} <= custom_calls(text)
    assert not re.search(rf"tensor<[\dx]*{T}x{T}x", text)
    assert f32_weight_dots(text) == []
    assert "bf16" in text


@pytest.mark.parametrize("case", sorted(CASES))
def test_train_step_lowers_for_tpu_with_splash_attention(case, monkeypatch):
    monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
    model, data = CASES[case]
    # data x fsdp x tensor: splash runs per device under shard_map (batch and heads split)
    text = lower_train_step("tpu", small_config(mesh=dict(data=2, fsdp=2, tensor=2), data=data,
                                                dtype="auto", **model))
    assert "tpu_custom_call" in custom_calls(text)
    assert f32_weight_dots(text) == []


def test_encoder_decoder_lowers_for_tpu(monkeypatch):
    # Self-attention on splash (segment ids); masked cross-attention falls back to XLA.
    monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
    config = small_config(data={"document_masking": True}, kind="encoder_decoder", num_layers=1,
                          max_len=2 * T, dtype="auto")
    config.train.objective = "prefix_lm"
    run = runs.setup(config)
    step = trainer.make_train_step(run)
    batch = {k: jax.ShapeDtypeStruct((B, 2 * T), jnp.float32 if k == "weights" else jnp.int32,
                                     sharding=sharding.batch_sharding(run.mesh))
             for k in ("inputs", "targets", "weights", "segment_ids")}
    with sharding.activate(run.mesh):
        text = step.trace(run.abstract_state, batch).lower(lowering_platforms=("tpu",)).as_text()
    assert "tpu_custom_call" in custom_calls(text)


def test_rbf_and_an_explicit_backend_lower_too(fake_cudnn):
    text = lower_train_step("cuda", small_config(kernel="rbf", attention_impl="cudnn"))
    assert "__cudnn$fmhaSoftmaxBackward" in custom_calls(text)  # the key bias rides in q/k
    with pytest.raises(ConfigError, match="bfloat16"):
        lower_train_step("cuda", small_config(attention_impl="cudnn", dtype="float32"))


def test_backend_choice_and_dtype_policy():
    pick = lambda platform, **kw: fast_attention.choose(  # noqa: E731
        "auto", **{"dtype": jnp.bfloat16, "head_dim": 64, "q_len": 256, "kv_len": 256,
                   "decode": False, "platform": platform, **kw})
    assert pick("tpu") == "splash" and pick("tpu", q_len=100, kv_len=100) == "splash"  # padded
    assert pick("tpu", q_len=100, kv_len=256) == "xla"
    assert pick("cpu") == "xla" and pick("tpu", decode=True) == "xla"
    assert pick("gpu", dtype=jnp.float32) == "xla"  # cuDNN flash needs bf16 / fp16
    assert pick("gpu", head_dim=60) == "xla"
    assert fast_attention.choose("einsum", dtype=jnp.float32, head_dim=64, q_len=8, kv_len=8,
                                 decode=True) == "einsum"  # an explicit choice wins
    assert [precision.resolve_dtype("auto", p) for p in ("cpu", "gpu", "tpu")] == [
        "float32", "bfloat16", "bfloat16"]
    assert precision.compute_dtype(ModelConfig()) == jnp.float32  # this host is a CPU
    with pytest.raises(ConfigError, match="attention_impl"):
        ModelConfig(attention_impl="flash")


def test_rbf_bias_folded_into_head_columns_is_exact_in_bf16():
    # Large keys: the bias -scale |k|^2 / 2 is about -60, where one bf16 step is 0.25.
    rng = np.random.default_rng(0)
    bf = lambda x: jnp.asarray(x, jnp.bfloat16)  # noqa: E731
    q, k, v = (bf(rng.normal(size=(1, 64, 2, 64)) * s) for s in (1.0, 2.0, 1.0))
    kernel = A.RBFKernel(64 ** -0.5)
    f32 = lambda x: x.astype(jnp.float32)  # noqa: E731
    exact = A.smooth(kernel, f32(q), f32(k), f32(v), causal=True, impl="einsum")
    folded = f32(A.smooth(kernel, q, k, v, causal=True, impl="xla"))
    bias = kernel.key_bias(k)
    plain = f32(jax.nn.dot_product_attention(  # the fused path before: the bias rounded to bf16
        q, k, v, bias=jnp.transpose(bias, (0, 2, 1))[:, :, None, :].astype(jnp.bfloat16),
        scale=kernel.scale, is_causal=True))
    err_folded = float(jnp.max(jnp.abs(folded - exact)))
    err_plain = float(jnp.max(jnp.abs(plain - exact)))
    assert err_folded < 0.05 and err_folded < err_plain / 3, (err_folded, err_plain)


def test_bf16_matmuls_accumulate_in_f32_forward_and_backward():
    x = jnp.ones((2, 4, 8), jnp.bfloat16)
    w = jnp.ones((8, 16), jnp.float32)
    f = lambda x, w: jnp.sum(precision.dense("btd,dv->btv", x, w, jnp.bfloat16, jnp.float32))  # noqa: E731
    text = jax.jit(jax.value_and_grad(f, argnums=(0, 1))).lower(x, w).as_text()
    dots = [line for line in text.splitlines() if "dot_general" in line]
    assert len(dots) == 3
    assert all(re.search(r"\(tensor<[\dx]+xbf16>, tensor<[\dx]+xbf16>\) -> tensor<[\dx]+xf32>", d)
               for d in dots), dots
    gx, gw = jax.grad(f, argnums=(0, 1))(x, w)
    assert gw.dtype == jnp.float32 and gx.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(gw), 8.0)


def test_remat_dots_saves_no_attention_scores(capsys):
    cfg = ModelConfig(d_model=32, num_heads=2, num_layers=2, max_len=64, vocab_size=16,
                      remat="dots", dtype="float32", attention_impl="einsum")
    from lm.models import build_model

    model = build_model(cfg)
    tokens = jnp.zeros((2, 64), jnp.int32)
    params = model.init(jax.random.PRNGKey(0), tokens)["params"]
    loss = lambda p: jnp.sum(model.apply({"params": p}, tokens))  # noqa: E731
    jax.ad_checkpoint.print_saved_residuals(loss, params)
    saved = capsys.readouterr().out
    assert "64,64]" not in saved.replace(" ", ""), saved
    assert "[2,64,3" in saved.replace(" ", "") or "f32[3,2,64" in saved.replace(" ", "")


def test_d_model_not_dividing_fsdp_is_a_named_error():
    config = small_config(mesh=dict(data=1, fsdp=8, tensor=1), d_model=100, dtype="float32")
    with pytest.raises(ConfigError, match=r"parameter .* \(embed, size 100\) .*fsdp"):
        runs.setup(config)


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_tensor_parallel_across_two_processes_matches_one(tmp_path):
    """Mesh (1, 1, 8): the batch axes (size 1) are smaller than the process count, so both
    processes feed the same rows; 2 processes x 4 CPU devices == 1 process x 8."""
    args = ["--config=experiments/quickstart.py:tiny", "--config.train.sample_tokens=0",
            "--config.train.steps=6", "--config.train.log_every=2", "--config.train.eval_every=6",
            "--config.train.checkpoint_every=6", "--config.model.num_heads=8",
            "--config.model.d_model=64", "--config.mesh.data=1", "--config.mesh.tensor=8",
            "--noprogress"]
    env = dict(os.environ, PYTHONPATH=ROOT)
    run = lambda e, extra: subprocess.Popen(  # noqa: E731
        [sys.executable, "-m", "lm", "train", *args, *extra], cwd=ROOT, env=e,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    port = _free_port()
    two = dict(env, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    procs = [run(dict(env, XLA_FLAGS="--xla_force_host_platform_device_count=8"),
                 [f"--workdir={tmp_path / 'one'}"])]
    procs += [run(two, [f"--workdir={tmp_path / 'two'}", f"--coordinator_address=localhost:{port}",
                        "--num_processes=2", f"--process_id={i}"]) for i in range(2)]
    outs = [p.communicate(timeout=400) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert "step 6: valid loss" in outs[1][0] and "valid loss" not in outs[2][0]
    ref, got = workdir_files.read_metrics(tmp_path / "one"), workdir_files.read_metrics(tmp_path / "two")
    assert [r["step"] for r in got] == [r["step"] for r in ref] == [2, 4, 6]
    np.testing.assert_allclose([r["loss"] for r in got], [r["loss"] for r in ref], rtol=1e-5)
    np.testing.assert_allclose(got[-1]["eval_loss"], ref[-1]["eval_loss"], rtol=1e-5)


def test_url_workdir_mirrors_small_files_and_checkpoints_at_the_url(tmp_path, monkeypatch):
    """A gs:// workdir, with a local folder standing in for the bucket (etils.epath treats both
    alike): checkpoints written at the URL, config / metrics / tokenizer copied up, and a
    fresh machine (empty mirror cache) loads the run from the URL alone."""
    from lm import remote

    bucket = str(tmp_path / "bucket" / "run")
    monkeypatch.setattr(remote, "is_url", lambda p: str(p) == bucket)
    monkeypatch.setenv("LM_WORKDIR_CACHE", str(tmp_path / "cache"))
    config = small_config(d_model=32, num_layers=1, max_len=16, dtype="auto")
    config.train.update(steps=4, log_every=2, eval_every=4, eval_batches=1, checkpoint_every=4,
                        sample_tokens=0)
    trainer.train(config, bucket, progress=False)
    files = {str(p.relative_to(bucket)) for p in __import__("pathlib").Path(bucket).rglob("*")}
    assert {"config.json", "metrics.jsonl", "summary.json", "checkpoints"} <= files
    assert any(f.startswith("tokenizer/") for f in files) and any(f.startswith("checkpoints/4") for f in files)
    assert [r["step"] for r in workdir_files.read_metrics(bucket)] == [2, 4]
    monkeypatch.setenv("LM_WORKDIR_CACHE", str(tmp_path / "other_machine"))
    _, _, params, _ = runs.load_workdir(bucket)
    assert jax.tree.leaves(params)[0].shape[-1] == 32


def _grad_text_and_residuals(remat, capsys):
    from lm.models import build_model
    cfg = ModelConfig(d_model=32, num_heads=2, num_layers=1, max_len=32, vocab_size=16,
                      remat=remat, dtype="bfloat16", attention_impl="einsum")
    model = build_model(cfg)
    tokens = jnp.zeros((2, 32), jnp.int32)
    params = model.init(jax.random.PRNGKey(0), tokens)["params"]
    loss = lambda p: jnp.sum(model.apply({"params": p}, tokens))  # noqa: E731
    text = jax.jit(jax.grad(loss)).lower(params).as_text()
    jax.ad_checkpoint.print_saved_residuals(loss, params)
    saved = capsys.readouterr().out.splitlines()
    weight_dots = sum(1 for line in text.splitlines()
                      if "dot_general" in line and "batching_dims" not in line)
    return weight_dots, saved


def test_remat_policies_differ_in_bf16(capsys):
    """bf16 matmuls are a custom_vjp: 'dots' must still save their outputs (by name), so it
    recomputes no weight matmul ('none' does the same count), while 'full' recomputes the
    forward projections of the layer (qkv, out, mlp in; the last one's output is not needed)."""
    counts, saved = {}, {}
    for remat in ("none", "dots", "full"):
        counts[remat], saved[remat] = _grad_text_and_residuals(remat, capsys)
    assert counts["dots"] == counts["none"], counts
    assert counts["full"] >= counts["none"] + 3, counts
    named = [s for s in saved["dots"] if "named 'matmul'" in s]
    assert len(named) == 3, saved["dots"]  # qkv, attention out, mlp in (mlp out feeds no grad)
    assert len(saved["full"]) < len(saved["dots"]), (saved["full"], saved["dots"])
    # bf16 norms keep their bf16 input, not f32 copies of [B, T, D] (lm.layers.LayerNorm)
    assert not [s for s in saved["none"] if s.startswith("f32[2,32,32]")], saved["none"]


def test_every_fallback_logs_what_why_and_cost(caplog, fake_cudnn):
    import logging
    caplog.set_level(logging.WARNING)
    fast_attention._logged.clear()
    pick = lambda **kw: fast_attention.choose("auto", **{  # noqa: E731
        "dtype": jnp.bfloat16, "head_dim": 64, "q_len": 256, "kv_len": 256, "decode": False,
        "platform": "gpu", **kw})
    assert pick(dtype=jnp.float32) == "xla" and pick(head_dim=256) == "xla"
    assert pick(head_dim=128) == "cudnn"
    assert pick(platform="tpu", q_len=100, kv_len=256) == "xla"
    kernel = A.make_kernel(ModelConfig(kernel="performer", d_model=32, num_heads=2))
    x = jnp.ones((1, 8, 2, 16))
    A.smooth(kernel, x, x, x, causal=True, segment_ids=jnp.ones((1, 8), jnp.int32))
    lines = [r.message for r in caplog.records]
    expect = ["attention on GPU runs XLA, not cuDNN flash: compute dtype float32",
              "attention on GPU runs XLA, not cuDNN flash: head_dim 256 (cuDNN flash: a multiple "
              "of 8, <= 128 on this GPU; 256 on sm90)",
              "attention on TPU runs XLA, not splash: 100 queries x 256 keys",
              "PerformerKernel attention runs its exact quadratic form"]
    for e in expect:
        assert any(line.startswith(e) and "cost:" in line for line in lines), (e, lines)
    assert precision.gpu_capability() is None  # a CPU host: no GPU generation assumed


def test_splash_pads_a_length_it_does_not_take(caplog):
    import logging
    caplog.set_level(logging.WARNING)
    fast_attention._logged.clear()
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=(1, 100, 2, 64)), jnp.float32) for _ in range(3))
    seg = jnp.asarray(np.repeat([1, 2], 50)[None], jnp.int32)
    text = jax.jit(lambda q, k, v: fast_attention.splash_attention(
        q, k, v, scale=0.125, segment_ids=seg, causal=True)).trace(q, k, v).lower(
        lowering_platforms=("tpu",)).as_text()
    assert "tpu_custom_call" in custom_calls(text) and "tensor<1x100x2x64xf32>" in text
    assert any(r.message.startswith("splash attention pads T: T=100 is not a multiple of 128; "
                                    "cost: 28% more") for r in caplog.records)


def test_packed_segments_for_cudnn():
    seg = jnp.asarray([[1, 1, 2, 2, 2, 0], [3, 3, 3, 3, 3, 3]], jnp.int32)
    lengths, offsets = fast_attention.packed_segments(seg)
    np.testing.assert_array_equal(lengths, [[2, 3, 1, -1, -1, -1], [6, -1, -1, -1, -1, -1]])
    np.testing.assert_array_equal(offsets, [[0, 2, 5, -1, -1, -1, -1], [0, -1, -1, -1, -1, -1, -1]])
