"""Scaling forecasts: L(N, D) and L(C) fits, links, phase changes, attainable bounds, backtests."""

import math
import os

import numpy as np
import pytest

from lm.scaling import fitting

C = np.geomspace(1e10, 1e13, 6)


def law_c(c, floor=1.0, a=2.0, b=0.4, c0=1e10):
    return floor + a * (c / c0) ** -b


def compute_only(loss, metric, threshold=1.2, comparator="<="):
    """Hand-made records with compute and loss only (no N, D): the L(C) fallback."""
    return [dict(rung=f"c{i}", train_flops=float(c), surrogate_value=float(y), metric_value=float(m),
                 criterion=dict(metric="loss", comparator=comparator, threshold=threshold))
            for i, (c, y, m) in enumerate(zip(C, loss, metric))]


def test_compute_only_records_fit_l_of_c_and_recover_the_crossing():
    from lm.scaling import forecast

    y = law_c(C)
    f = forecast.forecast(compute_only(y, y), samples=20)
    assert f["kind"] == "L(C)" and f["law"]["E"] == pytest.approx(1.0, rel=0.02)
    true = 1e10 * ((1.2 - 1.0) / 2.0) ** (-1 / 0.4)  # where the law reaches 1.2
    assert f["compute_at_threshold"] == pytest.approx(true, rel=0.05)
    g = forecast.forecast(compute_only(y, y, threshold=0.8), samples=10)
    assert g["no_trend"] and "stays above" in g["reason"]  # below the floor: never
    assert not g["attainable"]["passes"]


def test_fits_hold_blas_to_one_thread():
    with fitting.one_blas_thread():
        assert set(fitting.blas_threads()) <= {1}
        with fitting.one_blas_thread():  # nested: cheap and still one thread
            assert set(fitting.blas_threads()) <= {1}
        assert set(fitting.blas_threads()) <= {1}


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
    assert not backtest.collapses(rows) and "collapses" not in text  # one kind: no split
    # a second series whose loss falls 20x (a task being learned) is summarised apart
    fall = [dict(r, history=[dict(h, eval_loss=h["eval_loss"] * 0.2 ** i) for h in r["history"]],
                 surrogate_value=r["surrogate_value"] * 0.2 ** i, experiment="falls") for i, r in enumerate(recs)]
    rows_fall = backtest.backtest(archive.series_points(fall), samples=4)
    assert backtest.collapses(rows_fall) and rows_fall[0]["series_loss_span"] > 10
    both = archive.format_backtests([(archive.series_key(recs[0]), rows), (archive.series_key(fall[0]), rows_fall)])
    assert "### Series whose loss collapses" in both and "### Series whose loss stays within 10x" in both


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
    # r3's accuracy 0.55 -> 1.0 came with its loss 1.66 -> 0.04 (co-movement, cosine runs: only
    # final evals are past burn-in): not a phase change
    assert "unpredictable (phase change)" not in text
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


# ---------------------------------------------------------------------------------------------
# Phase changes judged on the co-movement of surrogate and metric; attainable bounds; the
# external check.

def _acc_run(name, loss, acc, examples, step=None):
    from lm.scaling.runs import Run

    k = len(loss)
    step = np.arange(1, k + 1, dtype=float) * 100 if step is None else step
    return Run(name=name, n=1e6, d=step * 1e4, loss=np.asarray(loss, float), metric=np.asarray(acc, float),
               step=step, usable=step >= 200, compute=1.0, final_loss=loss[-1], final_metric=acc[-1],
               schedule="constant", examples=examples)


def test_smooth_co_movement_with_noise_is_never_flagged_a_real_step_is():
    from lm.scaling import phase
    from lm.scaling.link import Link

    link = Link("sigmoid", (0.0, 1.0, 3.0, 3.3))
    rng = np.random.default_rng(0)
    n_ex = 500
    flagged = 0
    for trial in range(20):  # binomial eval noise on a smooth link: never a phase change
        runs = []
        for i, top in enumerate((4.0, 3.6, 3.3, 3.0)):
            loss = np.linspace(top + 0.6, top, 10) + rng.normal(0, 0.01, 10)
            acc = rng.binomial(n_ex, link(loss)) / n_ex
            runs.append(_acc_run(f"r{i}", loss, acc, n_ex))
        flagged += bool(phase.phase_changes(runs, link))
    assert flagged == 0
    # the top rung's accuracy jumps 0.3 -> 0.95 while its loss moves 0.02: a capability the
    # smaller rungs lack, not noise
    loss = np.linspace(3.2, 3.1, 10)
    acc = np.where(np.arange(10) >= 6, 0.95, link(loss))
    runs[-1] = _acc_run("r3", loss, acc, n_ex)
    got = phase.phase_changes(runs, link)
    assert [(g["rung"], g["steps"]) for g in got] == [("r3", [600, 700])]
    # the same jump inside the burn-in (evals the law never saw) is not judged
    early = np.where(np.arange(10) >= 1, 0.95, 0.3)
    runs[-1] = _acc_run("r3", loss, early, n_ex)
    assert not phase.phase_changes(runs, link)


def test_attainable_bound_misses_a_floor_above_the_criterion_and_passes_a_clean_law():
    from lm.scaling import forecast

    y = law_c(C)  # floor 1.0
    high = forecast.forecast(compute_only(y, y, threshold=0.9), samples=30)
    att = high["attainable"]
    assert att["confidence"] == 0.9 and att["budget_compute"] == pytest.approx(1000 * C[-1], rel=1e-6)
    assert att["bound"] > 0.9 and not att["passes"]  # 90% bound of the best loss misses 0.9
    clean = law_c(C, floor=0.0)  # a pure power law: 1.2 would be met ~10x past the top rung
    thr = float(law_c(10 * C[-1], floor=0.0))
    ok = forecast.forecast(compute_only(clean, clean, threshold=thr), samples=30)["attainable"]
    assert ok["passes"] and ok["bound"] <= thr and ok["best"] < thr


def test_flag_never_overrides_an_impossible_target():
    from lm.scaling import forecast
    from lm.scaling.link import Link

    link, _ = link_crossing_at(50.0)
    recs = synth_series(link, jump=("n3", 5, 0.99))
    f = forecast.forecast(recs, samples=10)
    assert f["unpredictable"] and f["attainable"]["passes"]  # flagged: a pass is not excluded
    imp = [dict(r, criterion=dict(r["criterion"], threshold=1.5)) for r in recs]
    g = forecast.forecast(imp, samples=10)
    assert g["attainable"]["impossible"] and not g["attainable"]["passes"] and g["no_trend"]


def test_external_runs_backtest_is_calibrated_on_a_slice():
    from lm.scaling import backtest, external

    runs = external.load()
    assert len(runs) == 245 and all(r.n > 0 and r.final_loss > 1.5 for r in runs)
    lv = external.levels(runs)[3:9]  # six octaves: seconds, not minutes
    rows = backtest.backtest_levels(external.series([r for v in lv for r in v], 0.0), lv, samples=12)
    s = backtest.summarize(rows)
    assert s["predictions"] > 20 and s["next_rung_pct"] < 5.0
    assert 0.4 <= s["coverage"] <= 1.0 and s["width_pct"] < 30.0


def test_two_rungs_measure_the_laws_miss_on_the_top_rungs_own_curve():
    """Two rungs cannot hold out a compute level; the second half of the top rung's curve is held
    out instead. A curve that bends away from the law there (a loss falling faster than any power
    law, as in a task being learned) must widen the interval of the next rung; a clean one not."""
    link, _ = link_crossing_at(50.0)
    clean = synth_series(link, ns=NS[:2])
    f = forecast.forecast(clean, samples=20, target=dict(n=NS[2], d=TPP * NS[2], compute=6.0 * NS[2] * TPP * NS[2]))
    miss = f["holdout_miss"]
    assert miss["rung"] == "n1 (second half)" and miss["factor"] == pytest.approx(2.0)
    assert miss["log_error"] < 0.01
    bent = [dict(r, history=[dict(h) for h in r["history"]]) for r in clean]
    for h in bent[1]["history"][4:]:  # the top rung's second half falls 3x faster than the law
        h["eval_loss"] *= 0.6 ** (h["step"] / 400 - 1)
    bent[1]["surrogate_value"] = bent[1]["history"][-1]["eval_loss"]
    g = forecast.forecast(bent, samples=20, target=dict(n=NS[2], d=TPP * NS[2], compute=6.0 * NS[2] * TPP * NS[2]))
    assert g["holdout_miss"]["log_error"] > 0.2
    assert g["at"]["log_sd"] > 5 * f["at"]["log_sd"]
