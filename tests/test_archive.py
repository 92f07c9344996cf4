"""The archive: verdict rules on synthetic series, atomic never-overwriting writes, bad files."""

import json
import math
import multiprocessing
import os

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


def test_verdict_passed_and_diverged():
    assert decide(rec("xs", 1e10, 0.9))[0] == "passed"
    assert decide(rec("xs", 1e10, 1.1, comparator="<"), rec("s", 1e11, 1.0))[0] == "inconclusive"
    assert decide(rec("xs", 1e10, 0.95, metric="accuracy", comparator=">=", threshold=0.9, loss=0.2))[0] == "passed"
    verdict, reason, _ = decide(rec("xs", 1e10, math.nan))
    assert verdict == "failed" and "not finite" in reason


def test_verdict_inconclusive_single_rung_or_noise():
    verdict, reason, _ = decide(rec("xs", 1e10, 2.0))
    assert verdict == "inconclusive" and "one rung" in reason
    verdict, reason, _ = decide(rec("s", 1e11, 1.95, noise=0.1), rec("xs", 1e10, 2.0, noise=0.1, verdict="inconclusive"))
    assert verdict == "inconclusive" and "noise" in reason


def test_verdict_inverse():
    verdict, reason, _ = decide(rec("s", 1e11, 2.5), rec("xs", 1e10, 2.0, verdict="inconclusive"))
    assert verdict == "inverse" and "worse" in reason


def test_verdict_not_yet_with_predicted_compute():
    older = [rec("xs", 1e10, law(1e10, 0.0), threshold=0.2), rec("s", 1e11, law(1e11, 0.0), threshold=0.2)]
    verdict, reason, trend = decide(rec("m", 1e12, law(1e12, 0.0), threshold=0.2), *older)
    assert verdict == "not_yet" and "crosses" in reason
    true = 1e10 * 0.1 ** (-1 / 0.4)  # 2 (C/1e10)^-0.4 = 0.2
    assert trend["compute_at_threshold"] == pytest.approx(true, rel=0.05)


def test_verdict_failed_when_the_floor_is_above_threshold():
    cs = [1e10, 1e11, 1e12, 1e13]
    older = [rec(r, c, law(c, 1.3)) for r, c in zip(["xs", "s", "m"], cs)]
    verdict, reason, trend = decide(rec("l", cs[3], law(cs[3], 1.3)), *older)
    assert verdict == "failed" and "no trend" in reason and trend["no_trend"]


def test_series_are_separate_per_variant_and_skip_broken():
    other = rec("xs", 1e10, 3.0, variant="model.kernel=linear")
    broken = dict(rec("xs", 1e10, 3.0), verdict="broken", metric_value=None)
    verdict, _, _ = decide(rec("s", 1e11, 2.0), other, broken)
    assert verdict == "inconclusive"


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
    records = [dict(rec(r, c, law(c, 0.0)), verdict=v)
               for r, c, v in [("xs", 1e10, "inconclusive"), ("s", 1e11, "not_yet")]]
    passed = dict(rec("m", 1e13, law(1e13, 0.0)), verdict="passed", parent=records[1]["id"],
                  prediction=dict(archive.trend_of(archive.series_points(records), target_compute=1e13)))
    text = archive.report(records + [passed], str(tmp_path))
    assert "| xs | s | m | l | xl |" in text and "not run" in text
    assert "Predicted (before the run) vs actual" in text and passed["id"] in text
    assert (tmp_path / "synthetic.png").stat().st_size > 1000
    assert archive.find_record(records, records[0]["id"][:-2])["id"] == records[0]["id"]
