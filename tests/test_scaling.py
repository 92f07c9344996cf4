"""Trend fits with a floor term: known crossings are recovered, a high floor means no trend."""

import math
import os

import numpy as np
import pytest

from lm import scaling

C = np.geomspace(1e10, 1e13, 6)


def law(c, floor=1.0, a=2.0, b=0.4, c0=1e10):
    return floor + a * (c / c0) ** -b


def test_fit_recovers_parameters_and_crossing():
    trend = scaling.fit_trend(C, law(C))
    assert trend.floor == pytest.approx(1.0, rel=1e-3)
    assert trend.b == pytest.approx(0.4, rel=1e-3)
    true = 1e10 * ((1.2 - 1.0) / 2.0) ** (-1 / 0.4)  # where the law reaches 1.2
    assert trend.crossing(1.2) == pytest.approx(true, rel=1e-2)
    assert trend.crossing(0.9) is None  # below the floor: never


def test_predict_interval_covers_crossing_with_noise():
    rng = np.random.default_rng(1)
    y = law(C) + rng.normal(0, 0.005, C.size)
    out = scaling.predict(C, y, y, threshold=1.2, lower_is_better=True, noise=0.005,
                          target_compute=1e15, samples=100)
    true = 1e10 * (0.1) ** (-1 / 0.4)
    assert not out["no_trend"]
    lo, hi = out["interval"]
    assert lo < true < hi and lo / hi > 0.05
    assert out["at"]["passes"] is True and out["at"]["surrogate"] < 1.2


def test_no_trend_when_floor_is_above_threshold():
    out = scaling.predict(C, law(C), law(C), threshold=0.8, lower_is_better=True, samples=50)
    assert out["no_trend"] and out["compute_at_threshold"] is None
    assert "no trend" in out["reason"] and "floor" in out["reason"]


def test_accuracy_is_mapped_through_the_loss():
    loss = law(C, floor=0.0)
    acc = 1.0 - 0.25 * loss  # higher is better, linear in the loss
    out = scaling.predict(C, loss, acc, threshold=0.9, lower_is_better=False, samples=50)
    assert out["target_surrogate"] == pytest.approx(0.4, rel=1e-6)
    true = 1e10 * (0.4 / 2.0) ** (-1 / 0.4)
    assert out["compute_at_threshold"] == pytest.approx(true, rel=2e-2)
    # an accuracy that falls as the loss falls never maps to a crossing
    bad = scaling.predict(C, loss, 0.5 + 0.1 * loss, threshold=0.9, lower_is_better=False, samples=20)
    assert bad["no_trend"]


def test_two_points_fix_the_floor_at_zero():
    trend = scaling.fit_trend(C[:2], law(C[:2], floor=0.0))
    assert trend.floor_fixed and trend.floor == 0.0
    assert trend.b == pytest.approx(0.4, rel=1e-6)
    with pytest.raises(ValueError, match="two"):
        scaling.fit_trend(C[:1], law(C[:1]))


def test_crossing_far_beyond_float_range_is_no_crossing():
    flat = scaling.Trend(floor=0.0, a=1.0, b=1e-5, c0=1e10, n=3)
    assert flat.crossing(0.5) is None and flat.crossing(2.0) is not None


# ---------------------------------------------------------------------------------------------
# What a fit reads from records (lm/scaling/records.py): new fields, and derived for old records.

def test_old_record_fields_are_derived_from_config_and_flops():
    import json
    import os

    from lm.scaling import records

    path = os.path.join(os.path.dirname(__file__), "..", "experiments", "archive",
                        "20261121-201440-emergence_copy-r3-b86c59.json")
    rec = json.load(open(path))
    assert "num_params_nonembed" not in rec  # an old record
    assert records.n_params(rec) == pytest.approx(24 * 32 * 32 + 28 * 32)  # 2 layers, width 32
    assert records.tokens(rec) == 300 * 32 * 16
    assert records.schedule(rec) == dict(name="cosine", warmup_steps=20, steps=300, min_lr_ratio=0.1)
    assert records.incapable(rec) is None
    ctx2 = dict(config=dict(model=dict(max_len=2), data=dict(source="markov", markov_order=3)))
    assert "shorter" in records.incapable(ctx2)


# ---------------------------------------------------------------------------------------------
# L(N, D) fits, the sigmoid link, crossings, phase changes and backtests on synthetic series.

from lm import archive  # noqa: E402
from lm.scaling import backtest, forecast  # noqa: E402
from lm.scaling.law import fit_law  # noqa: E402
from lm.scaling.link import Link  # noqa: E402

TRUE = dict(E=1.0, A=30.0, a=0.3, B=50.0, b=0.25)
NS = [1e4 * 2 ** i for i in range(5)]
TPP = 20  # tokens per parameter


def true_loss(n, d):
    return TRUE["E"] + TRUE["A"] * np.asarray(n) ** -TRUE["a"] + TRUE["B"] * np.asarray(d) ** -TRUE["b"]


def synth_series(link, *, noise=0.0, seed=0, ns=NS, final_shift=None, jump=None):
    """Records of a constant-LR ladder at fixed tokens per parameter, 8 evals each, from the
    true law (times lognormal noise) and `link`; final_shift={rung: factor} scales one rung's
    losses; jump=(rung, eval index, value) overrides the metric from that eval on."""
    rng = np.random.default_rng(seed)
    out = []
    for i, n in enumerate(ns):
        name = f"n{i}"
        steps, d_final = 800, TPP * n
        hist = []
        for k in range(1, 9):
            step = k * steps // 8
            loss = float(true_loss(n, d_final * step / steps) * math.exp(rng.normal(0, noise)))
            loss *= (final_shift or {}).get(name, 1.0)
            acc = float(link(loss))
            if jump and jump[0] == name and k >= jump[1]:
                acc = jump[2]
            hist.append({"step": step, "eval_loss": loss, "eval_accuracy": acc})
        out.append(dict(
            schema=archive.SCHEMA, id=f"synthetic-{name}", experiment="synthetic", rung=name,
            ladder=[f"n{j}" for j in range(len(ns))], variant="", vocab_size=16,
            criterion=dict(metric="accuracy", comparator=">=", threshold=0.9, split="valid"),
            num_params_nonembed=n, tokens=d_final, train_flops=6.0 * n * d_final,
            schedule=dict(name="constant", warmup_steps=10, steps=steps, min_lr_ratio=0.1),
            steps=steps, history=hist, surrogate_value=hist[-1]["eval_loss"],
            metric_value=hist[-1]["eval_accuracy"], created=f"2025-01-0{i + 1}T00:00:00Z"))
    return out


def true_crossing(l_star):
    """Compute along the ladder (N and D both ~ s^0.5) where the true law reaches l_star."""
    n_top, d_top = NS[-1], TPP * NS[-1]
    lo, hi = 1e-3, 1e6
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if true_loss(n_top * mid ** 0.5, d_top * mid ** 0.5) > l_star else (lo, mid)
    return 6.0 * n_top * d_top * lo


def link_crossing_at(s):
    """A sigmoid link whose 0.9 crossing sits s x the top rung's compute along the ladder."""
    l_star = float(true_loss(NS[-1] * s ** 0.5, TPP * NS[-1] * s ** 0.5))
    lo, hi, k = 1 / 16, 1.0, 4.0
    l0 = l_star - math.log((hi - lo) / (0.9 - lo) - 1.0) / k
    return Link("sigmoid", (lo, hi, k, l0)), l_star


def test_law_recovers_known_parameters():
    n = np.repeat(NS, 7)
    d = np.concatenate([TPP * x * np.arange(2, 9) / 8 for x in NS])
    rng = np.random.default_rng(0)
    y = true_loss(n, d) * np.exp(rng.normal(0, 0.002, n.size))
    law = fit_law(n, d, y)
    assert law.E == pytest.approx(TRUE["E"], rel=0.15)
    assert law.a == pytest.approx(TRUE["a"], rel=0.15) and law.b == pytest.approx(TRUE["b"], rel=0.15)
    assert law(1e6, 2e7) == pytest.approx(true_loss(1e6, 2e7), rel=0.01)  # 6x N beyond the data
    assert not law.per_n and fit_law(n[:7], d[:7], y[:7]).per_n  # one N: a learning curve L(D)


def test_forecast_recovers_the_crossing_within_its_interval():
    link, l_star = link_crossing_at(4.0)
    recs = synth_series(link, noise=0.003)
    f = forecast.forecast(recs, samples=40)
    assert f["kind"] == "L(N,D)" and not f["unpredictable"]
    assert f["link"]["kind"] == "sigmoid" and f["target_surrogate"] == pytest.approx(l_star, rel=0.02)
    true = true_crossing(l_star)
    lo, hi = f["interval"]
    assert lo <= true <= hi and f["compute_at_threshold"] == pytest.approx(true, rel=0.5)
    assert f["p_never_100x"] < 0.2
    # the ladder's rungs still to run: the cheapest one past the true crossing is named
    cands = [dict(rung=f"x{k}", n=NS[-1] * k ** 0.5, d=TPP * NS[-1] * k ** 0.5) for k in (2, 8, 16)]
    ahead, cheapest = forecast.rungs_ahead(f, cands)
    assert cheapest == "x8" and [a["passes"] for a in ahead] == [False, True, True]
    # a criterion that needs a loss below the law's floor E = 1: no trend
    flat = [dict(r, criterion=dict(r["criterion"], threshold=0.99999)) for r in recs]
    g = forecast.forecast(flat, samples=10)
    assert g["target_surrogate"] < TRUE["E"]
    assert g["no_trend"] and g["compute_at_threshold"] is None and "stays above" in g["reason"]


def test_phase_change_is_unpredictable():
    link, _ = link_crossing_at(50.0)  # smoothly the metric would stay low across the ladder
    recs = synth_series(link, jump=("n3", 5, 0.99))
    f = forecast.forecast(recs, samples=10)
    assert f["unpredictable"] and not f["no_trend"]
    ev = f["phase_changes"][0]
    assert ev["rung"] == "n3" and ev["steps"] == [400, 500] and ev["metric"][1] == 0.99
    assert "unpredictable (phase change)" in f["reason"]
    verdict, reason, _ = archive.decide_verdict(recs[2], [recs[0], recs[1], recs[3]])
    assert verdict == "not_yet" and "unpredictable (phase change)" in reason
    smooth = forecast.forecast(synth_series(link), samples=10)
    assert not smooth["unpredictable"]


def test_backtest_reports_known_errors():
    link, l_star = link_crossing_at(0.3)  # the top rung (n4) passes, n3 does not
    recs = synth_series(link, final_shift={"n4": 1.10})  # n4's losses 10% above the law
    assert recs[4]["metric_value"] >= 0.9 > recs[3]["metric_value"]
    rows = backtest.backtest(archive.series_points(recs), samples=8)
    assert {(r["rung"], len(r["from_rungs"])) for r in rows} == {
        ("n2", 2), ("n3", 2), ("n3", 3), ("n4", 2), ("n4", 3), ("n4", 4)}
    for r in rows:
        assert r["factor"] == pytest.approx(4.0 ** (int(r["rung"][1]) - len(r["from_rungs"]) + 1))
        if len(r["from_rungs"]) >= 3:  # two N leave A N^-a and E unseparated: no exact answer
            expected = 100 * (1 / 1.10 - 1) if r["rung"] == "n4" else 0.0
            assert r["loss_err_pct"] == pytest.approx(expected, abs=0.3)
            assert r["covered"] == (r["rung"] != "n4")  # exact data: a narrow interval
    assert all("crossing_factor" not in r for r in rows if r["rung"] != "n4")  # scored once
    cross = [r for r in rows if r["rung"] == "n4" and len(r["from_rungs"]) == 3]
    assert cross[0]["crossing_factor"] == pytest.approx(true_crossing(l_star) / recs[4]["train_flops"], rel=0.1)
    s = backtest.summarize(rows)
    assert s["next_rung_max_pct"] == pytest.approx(100 * (1 - 1 / 1.10), abs=0.3)
    assert s["met"]["next_rung_pct"] is (s["next_rung_pct"] <= 3.0)
    text = archive.format_backtests([(archive.series_key(recs[0]), rows)])
    assert "| n4 | n0, n1, n2, n3 |" in text and "NOT met" in text


def test_old_records_still_load_list_and_report(tmp_path):
    import shutil

    src = os.path.join(os.path.dirname(__file__), "..", "experiments", "archive")
    old = [n for n in os.listdir(src) if n.startswith("20261121-201")]  # emergence_copy, markov
    for n in old:
        shutil.copy(os.path.join(src, n), tmp_path / n)
    recs = archive.load_records(str(tmp_path))
    assert len(recs) == len(old) and all("num_params_nonembed" not in r for r in recs)
    assert "emergence_copy-r3" in archive.format_list(recs)
    text = archive.report(recs, str(tmp_path / "report"))
    assert "### emergence_copy" in text and "Backtest" in text
    assert "unpredictable (phase change)" in text  # r3's jump 0.65 -> 0.999 is flagged
    quick = archive.report(recs, str(tmp_path / "quick"), backtest=False)
    assert "## Backtest:" in text and "## Backtest:" not in quick and "Backtest left out" in quick
    assert not os.path.exists(tmp_path / "quick" / "backtest.png")
    ctx2 = archive.find_record(recs, "markov_order-ctx2")
    verdict, reason, _ = archive.decide_verdict(ctx2, recs)
    assert verdict == "inconclusive" and "cannot meet" in reason


def test_backtest_command(tmp_path):
    import subprocess
    import sys

    link, _ = link_crossing_at(0.3)
    for r in synth_series(link, ns=NS[:3]):
        archive.write_record(r, str(tmp_path))
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cmd = [sys.executable, "-m", "lm", "archive", "backtest", f"--archive={tmp_path}"]
    ok = subprocess.run(cmd + ["synthetic"], capture_output=True, text=True, env=env, timeout=300)
    assert ok.returncode == 0 and "| n2 | n0, n1 | 4 |" in ok.stdout and "coverage" in ok.stdout
    bad = subprocess.run(cmd + ["nosuch"], capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode != 0 and "no records of experiment 'nosuch'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_task_criterion_uses_answer_nll_as_surrogate():
    assert forecast.metric_keys("task:addition_3/exact_match") == (
        "eval_task/addition_3/exact_match", "eval_task/addition_3/answer_nll")
    link, _ = link_crossing_at(4.0)
    rec = synth_series(link, ns=NS[:1])[0]
    rec["criterion"] = dict(rec["criterion"], metric="task:addition_3/exact_match")
    for h in rec["history"]:  # the task's nll is 0.5 below the valid loss
        h["eval_task/addition_3/answer_nll"] = h["eval_loss"] - 0.5
        h["eval_task/addition_3/exact_match"] = h.pop("eval_accuracy")
    run = forecast.run_of(rec)
    assert run.loss[0] == pytest.approx(rec["history"][0]["eval_loss"] - 0.5)
    assert run.metric[-1] == rec["history"][-1]["eval_task/addition_3/exact_match"]
