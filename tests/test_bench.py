"""Smoke tests of the benchmark harness: it runs the trainer's step on a tiny config and writes
well-formed JSON lines. No timing assertions (the numbers depend on the machine)."""

import json
import math

import pytest

from bench import harness, hardware
from bench.configs import gpt, nanogpt


def tiny(batch_size=8):
    c = nanogpt.get_config("baby")
    c.model.num_layers, c.model.num_heads, c.model.d_model, c.model.max_len = 1, 2, 32, 16
    c.data.train_tokens, c.data.eval_tokens = 2000, 500
    c.train.batch_size = batch_size
    return c


def test_throughput_two_steps_writes_a_json_line(tmp_path):
    from bench import throughput
    config = tiny()
    res, bench = throughput.measure(config, steps=2, warmup=1)
    rec = harness.record("throughput", res, config=bench.run.config, bench=bench)
    path = harness.append_result(rec, str(tmp_path))
    assert path.endswith("cpu.jsonl")
    lines = open(path).read().splitlines()
    assert len(lines) == 1
    back = json.loads(lines[0])
    r = back["results"]
    assert r["steps_timed"] == 2
    assert r["step_ms_p10"] <= r["step_ms_median"] <= r["step_ms_p90"]
    assert r["tokens_per_s"] > 0 and r["compile_s"] > 0 and r["peak_flops"] > 0
    assert 0 < r["mfu"] and math.isfinite(r["final_loss"])
    assert back["config"]["tokens_per_step"] == 8 * 16
    assert back["config"]["flops_per_token"] > 6 * back["config"]["num_params"] * 0.1
    assert back["machine"]["platform"] == "cpu" and back["versions"]["jax"]
    assert "6*N" in r["flops_convention"]
    # A second run appends rather than overwrites, and the report tabulates the latest.
    harness.append_result(rec, str(tmp_path))
    assert len(open(path).read().splitlines()) == 2
    from bench import report
    table = report.report(str(tmp_path))
    assert "### cpu" in table and "bench_nanogpt:baby" in table


def test_fsdp_state_splits_evenly_over_eight_devices():
    import jax
    from bench import memory
    if jax.device_count() < 8:
        pytest.skip("needs the 8 host devices that tests/conftest.py asks for")
    res, _ = memory.fsdp_memory(tiny(), 8)
    # params + Adam mu and nu (+ a few scalar step counters)
    assert 0 <= res["state_bytes_total"] - 3 * res["param_bytes_total"] < 1024
    # d_model=32 splits over 8; nothing else is replicated in this model but norm scales.
    assert 1.0 <= res["ratio_to_ideal"] < 1.1


def test_peak_table_and_labels():
    assert hardware.table_peak("NVIDIA H100 80GB HBM3", "bfloat16") == 989e12
    assert hardware.table_peak("NVIDIA H100 PCIe", "bfloat16") == 756e12
    assert hardware.table_peak("NVIDIA H200", "bfloat16") == 989e12
    assert hardware.table_peak("NVIDIA A100-SXM4-80GB", "bfloat16") == 312e12
    assert hardware.table_peak("TPU v5 lite", "bfloat16") == 197e12
    assert hardware.table_peak("TPU v5p", "bfloat16") == 459e12
    assert hardware.table_peak("TPU v4", "bfloat16") == 275e12
    assert hardware.table_peak("Some New Chip", "bfloat16") is None
    assert hardware.device_label() == "cpu"


def test_configs_have_the_advertised_sizes():
    from lm.config import model_config
    from lm import models
    sizes = {}
    for rung in ("124m", "350m", "1b"):
        c = gpt.get_config(rung)
        c.model.vocab_size = c.data.markov_vocab
        sizes[rung] = models.count_params(model_config(c))
    assert 110e6 < sizes["124m"] < 140e6
    assert 320e6 < sizes["350m"] < 380e6
    assert 0.9e9 < sizes["1b"] < 1.3e9
    with pytest.raises(ValueError, match="unknown rung"):
        nanogpt.get_config("huge")


def test_gpu_benchmark_smoke_mode_writes_rows_and_a_table(tmp_path):
    """python -m bench.gpu --smoke: the loss check and one model through the same functions a
    GPU run uses (in this process: child processes would cost a JAX start each)."""
    from bench import gpu
    assert gpu.main(["--smoke", "--in_process", "--models=124m", "--steps=2",
                     f"--out={tmp_path}"]) == 0
    rows = [json.loads(line) for line in open(tmp_path / "results.jsonl")]
    assert [r["row"]["row"] for r in rows] == ["loss_check", "124m"]
    check, model = rows[0]["row"], rows[1]["row"]
    assert check["ok"] and check["relative_difference"] < gpu.LOSS_TOLERANCE  # f32 == f32 here
    assert model["tokens_per_s"] > 0 and model["compile_s"] > 0 and model["attention"] == "xla"
    assert math.isfinite(model["final_loss"]) and "6*N" in rows[1]["results"]["flops_convention"]
    table = open(tmp_path / "table.md").read()
    assert "| 124m | xla |" in table and "loss_check" in table


def test_gpu_benchmark_plans_fit_and_splits_hold_a_context():
    from bench import gpu
    from lm import trainer
    for name, plan in gpu.PLANS.items():
        c = gpu.gpt_config(name)
        assert c.model.max_len == gpu.CONTEXT and c.train.batch_size == plan["batch_size"]
        assert c.data.eval_tokens > gpu.CONTEXT + 1 and c.data.train_tokens > gpu.CONTEXT + 1
        assert plan["need_gib"] is None or plan["need_gib"] < 72, name  # 80 GB, cuDNN room
    with pytest.raises(SystemExit):
        gpu.parse(["--models=2b"])


def test_gpu_benchmark_child_failure_or_hang_is_a_row(monkeypatch, tmp_path):
    import argparse
    import sys
    from bench import gpu
    args = argparse.Namespace(steps=1, smoke=True, model_timeout_s=1)
    monkeypatch.setattr(sys, "executable", "/bin/false")  # a child that dies at once
    row = gpu.run_child("124m", args)
    assert row["row"] == "124m" and row["error"].startswith("exit 1")
    hang = tmp_path / "hang"
    hang.write_text("#!/bin/sh\nexec sleep 30\n")
    hang.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(hang))  # a child that never answers
    assert gpu.run_child("1b", args) == {"row": "1b", "error": "timed out after 1s"}
