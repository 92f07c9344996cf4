"""Trend fits with a floor term: known crossings are recovered, a high floor means no trend."""

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
