"""The archive: verdict rules on synthetic series, atomic never-overwriting writes, bad files."""

import json
import math
import multiprocessing
import os
import subprocess
import sys

import numpy as np
import pytest

from lm import archive


def rec(rung, flops, value, loss=None, *, metric="loss", comparator="<=", threshold=1.0,
        noise=0.0, verdict=None, variant=""):
    loss = value if loss is None else loss
    history = [{"step": i, f"eval_{metric}": value + noise * (-1) ** i} for i in range(3)]
    return dict(schema=archive.SCHEMA, id=archive.new_id("synthetic", rung), experiment="synthetic",
                rung=rung, ladder=["xs", "s", "m", "l", "xl"], variant=variant,
                criterion=dict(metric=metric, comparator=comparator, threshold=threshold, split="valid"),
                train_flops=flops, metric_value=value, surrogate_value=loss, history=history,
                verdict=verdict, created="2025-01-01T00:00:00Z")


def law(c, floor):
    return floor + 2.0 * (c / 1e10) ** -0.4


def decide(current, *older):
    return archive.decide_verdict(current, list(older))


TRUE = dict(E=1.0, A=30.0, a=0.3, B=50.0, b=0.25)  # L(N, D) = E + A N^-a + B D^-b


def true_loss(n, d):
    return TRUE["E"] + TRUE["A"] * n ** -TRUE["a"] + TRUE["B"] * d ** -TRUE["b"]


def ladder(threshold, *, rungs=5, noise=0.005, seed=0, experiment="synthetic"):
    """Records of a constant-LR ladder (N x4 per rung, 20 tokens per parameter, 6 evals each)
    on the true law times lognormal noise; criterion: valid loss <= threshold."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(rungs):
        n, steps = 1e4 * 4.0 ** i, 600
        hist = [{"step": k * 100, "eval_loss": float(true_loss(n, 20 * n * k / 6) * math.exp(rng.normal(0, noise)))}
                for k in range(1, 7)]
        out.append(dict(
            schema=archive.SCHEMA, id=f"2025010{i + 1}-000000-{experiment}-r{i}-00000{i}", experiment=experiment,
            rung=f"r{i}", ladder=[f"r{j}" for j in range(rungs)], variant="",
            criterion=dict(metric="loss", comparator="<=", threshold=threshold, split="valid"),
            num_params_nonembed=n, tokens=20 * n, train_flops=120.0 * n * n, steps=steps,
            schedule=dict(name="constant", warmup_steps=0, steps=steps, min_lr_ratio=1.0),
            history=hist, surrogate_value=hist[-1]["eval_loss"], metric_value=hist[-1]["eval_loss"],
            created=f"2025-01-0{i + 1}T00:00:00Z"))
    return out


def test_verdict_passed_diverged_and_missing():
    assert decide(rec("xs", 1e10, 0.9))[0] == "passed"
    assert decide(rec("xs", 1e10, 0.95, metric="accuracy", comparator=">=", threshold=0.9, loss=0.2))[0] == "passed"
    verdict, reason, _ = decide(rec("xs", 1e10, math.nan))
    assert verdict == "failed" and "not finite" in reason
    verdict, reason, _ = decide(dict(rec("xs", 1e10, 2.0), metric_value=None))
    assert verdict == "inconclusive" and "no valid loss" in reason


def test_a_first_miss_and_a_change_within_noise_are_not_yet():
    verdict, reason, _ = decide(rec("xs", 1e10, 2.0))
    assert verdict == "not_yet" and "no trend yet" in reason
    verdict, reason, _ = decide(rec("s", 1e11, 1.95, noise=0.1), rec("xs", 1e10, 2.0, noise=0.1, verdict="not_yet"))
    assert verdict == "not_yet" and "within noise" in reason


def test_verdict_inverse():
    verdict, reason, _ = decide(rec("s", 1e11, 2.5), rec("xs", 1e10, 2.0, verdict="not_yet"))
    assert verdict == "inverse" and "worse" in reason


def test_a_ladder_that_passes_at_rung_5_is_never_failed_before():
    losses = [r["metric_value"] for r in ladder(1.0)]
    runs = ladder((losses[3] + losses[4]) / 2)  # r4 (the fifth rung) is the first to pass
    verdicts = [archive.decide_verdict(r, runs[:i], samples=30) for i, r in enumerate(runs)]
    assert [v for v, _, _ in verdicts] == ["not_yet"] * 4 + ["passed"]
    assert "crosses" in verdicts[3][1] and "90% bound within 1000x" in verdicts[3][1]
    att = verdicts[3][2]["attainable"]
    assert att["confidence"] == 0.9 and att["bound"] < runs[0]["criterion"]["threshold"]
    assert att["budget_compute"] == pytest.approx(1000 * runs[3]["train_flops"], rel=0.01)


def test_a_floor_above_the_criterion_is_failed_with_its_confidence():
    runs = ladder(0.8)  # the law's floor E = 1: no compute reaches 0.8
    verdict, reason, trend = archive.decide_verdict(runs[4], runs[:4], samples=30)
    assert verdict == "failed" and "excluded at 90% confidence within 1000x" in reason
    assert trend["attainable"]["bound"] > 0.8 and trend["law"]["E"] == pytest.approx(1.0, rel=0.1)
    assert trend["attainable"]["confidence"] == 0.9 and "90% bound" in reason


def test_two_rungs_never_fail_a_series():
    runs = ladder(0.8)  # the floor is above the criterion, but two rungs cannot pin a floor
    verdict, reason, trend = archive.decide_verdict(runs[1], runs[:1], samples=30)
    assert verdict == "not_yet" and "3 rungs are needed to pin a floor" in reason, reason


def test_series_are_separate_per_variant_and_skip_broken():
    other = rec("xs", 1e10, 3.0, variant="model.kernel=linear")
    broken = dict(rec("xs", 1e10, 3.0), verdict="broken", metric_value=None)
    verdict, reason, _ = decide(rec("s", 1e11, 2.0), other, broken)
    assert verdict == "not_yet" and "first rung" in reason


def test_write_never_overwrites_and_roundtrips(tmp_path):
    r = rec("xs", 1e10, 2.0, verdict="inconclusive")
    p1 = archive.write_record(r, str(tmp_path))
    p2 = archive.write_record(r, str(tmp_path))  # same id: gets a fresh one
    assert p1 != p2 and os.path.exists(p1) and os.path.exists(p2)
    loaded = archive.load_records(str(tmp_path))
    assert len(loaded) == 2 and loaded[0]["metric_value"] == 2.0
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]  # no temp files left


def test_corrupt_and_foreign_files_are_skipped_with_a_warning(tmp_path):
    archive.write_record(rec("xs", 1e10, 2.0, verdict="inconclusive"), str(tmp_path))
    (tmp_path / "corrupt.json").write_text('{"schema": "lm.record/1", "id": ')
    (tmp_path / "foreign.json").write_text(json.dumps({"hello": "world"}))
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / ".half-written.tmp").write_text("{")
    with pytest.warns(archive.ArchiveWarning) as caught:
        records = archive.load_records(str(tmp_path))
    assert len(records) == 1
    text = " ".join(str(w.message) for w in caught)
    assert "corrupt.json" in text and "foreign.json" in text and "notes.txt" in text
    with pytest.warns(archive.ArchiveWarning):
        report = archive.report(archive.load_records(str(tmp_path)), str(tmp_path / "report"))
    assert "synthetic" in report


def _writer(args):
    directory, i = args
    return archive.write_record(rec("xs", 1e10 * (i + 1), 2.0, verdict="inconclusive"), directory)


def test_concurrent_writes_all_land(tmp_path):
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        paths = pool.map(_writer, [(str(tmp_path), i) for i in range(8)])
    assert len(set(paths)) == 8
    assert len(archive.load_records(str(tmp_path))) == 8


def test_report_table_plots_and_predictions(tmp_path):
    runs = ladder(2.0, rungs=3)
    records = [dict(runs[0], verdict="not_yet"), dict(runs[1], verdict="not_yet")]
    target = dict(n=runs[2]["num_params_nonembed"], d=runs[2]["tokens"], compute=runs[2]["train_flops"])
    passed = dict(runs[2], verdict="passed", parent=records[1]["id"],
                  prediction=archive.trend_of(archive.series_points(records), target=target, samples=10))
    text = archive.report(records + [passed], str(tmp_path), backtest=False)
    assert "| r0 | r1 | r2 |" in text and passed["id"] in text
    assert "Predicted (before the run) vs actual" in text
    assert (tmp_path / "synthetic.png").stat().st_size > 1000
    assert archive.find_record(records, records[0]["id"][:-2])["id"] == records[0]["id"]


def _lm(*args):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return subprocess.run([sys.executable, "-m", "lm", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def test_replay_redecides_in_the_order_run_and_report_goes_into_the_archive(tmp_path):
    """A ladder whose r3 passes; the archive holds what an old version decided (r2 "failed").
    Replayed with only the earlier records in view, nothing is failed and r3 passes."""
    arch = tmp_path / "arch"
    losses = [r["metric_value"] for r in ladder(1.0, rungs=4)]
    old = ["inconclusive", "not_yet", "failed", "passed"]
    for r, v in zip(ladder((losses[2] + losses[3]) / 2, rungs=4), old):
        archive.write_record(dict(r, verdict=v), str(arch))
    out = _lm("archive", "replay", "synthetic", f"--archive={arch}", "--samples=10")
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line.split(" | ") for line in out.stdout.splitlines() if line.startswith("| r") and "rung" not in line]
    assert [(r[0], r[7], r[8]) for r in rows] == [("| r0", "not_yet", "inconclusive"), ("| r1", "not_yet", "not_yet"),
                                                  ("| r2", "not_yet", "failed"), ("| r3", "passed", "passed")]
    assert rows[2][4] == "r3"  # told before r2: the cheapest rung predicted to pass
    assert "0 replayed `failed` verdicts on a series that passes later" in out.stdout
    assert "loop: stops at never; first pass r3" in out.stdout
    rep = _lm("archive", "report", f"--archive={arch}", "--nobacktest")
    assert rep.returncode == 0, rep.stderr[-2000:]
    assert (arch / "report" / "report.md").exists() and (arch / "report" / "synthetic.png").exists()
    assert archive.load_records(str(arch))  # report/ beside the records is not read as one
    bad = _lm("archive", "replay", "nosuch", f"--archive={arch}")
    assert bad.returncode != 0 and "no records of experiment 'nosuch'" in bad.stderr
