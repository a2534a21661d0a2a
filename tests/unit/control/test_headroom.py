"""Headroom per threshold rule, risk per service, and why the design brief's P is not a probability."""

from __future__ import annotations

import math

import pytest

from lichen.control.headroom import (
    Condition,
    Threshold,
    condition_headroom,
    condition_of,
    design_brief_p,
    headroom,
    risk_score,
    worst_value,
)


def test_upper_threshold_headroom() -> None:
    assert headroom(0.0, 0.05) == 1.0
    assert headroom(0.025, 0.05) == pytest.approx(0.5)
    assert headroom(0.05, 0.05) == 0.0
    assert headroom(0.1, 0.05) == pytest.approx(-1.0)


def test_lower_threshold_headroom_is_inverted() -> None:
    # availability < 0.9: healthy when high, so headroom grows with z
    assert headroom(0.9, 0.9, fires_above=False) == 0.0
    assert headroom(1.8, 0.9, fires_above=False) == pytest.approx(0.5)
    assert headroom(0.45, 0.9, fires_above=False) == pytest.approx(-1.0)
    assert headroom(0.0, 0.9, fires_above=False) == -math.inf
    assert headroom(0.99, 0.9, fires_above=False) > headroom(0.95, 0.9, fires_above=False)


def test_headroom_undefined_for_non_positive_thresholds() -> None:
    assert headroom(1.0, 0.0) is None
    assert headroom(1.0, -1.0) is None
    assert headroom(math.nan, 1.0) is None


def test_condition_parses_thresholds_and_orientation() -> None:
    leaf = condition_of("rate(errors_total[5m]) > 0.5")
    assert leaf == Condition("leaf", Threshold("rate(errors_total{}[5m])", ">", 0.5))
    flipped = condition_of("0.9 > avg_over_time(up[10m])")
    assert flipped is not None and flipped.threshold == Threshold("avg_over_time(up{}[10m])", "<", 0.9)
    assert not flipped.threshold.fires_above
    burn = condition_of("(a / b) > 14.4 * (1 - 0.999) and (c / d) > 14.4 * (1 - 0.999)")
    assert burn is not None and burn.kind == "and"
    assert [t.threshold for t in burn.thresholds()] == [pytest.approx(0.0144)] * 2
    assert condition_of("up == 0") is None
    assert condition_of("x > bool 3") is None
    assert condition_of("x > 1 or absent(y)") is None
    assert condition_of("x > 1 unless y == 0") == Condition("leaf", Threshold("x{}", ">", 1.0))
    with pytest.raises(ValueError):
        condition_of("x >")


def test_and_takes_the_larger_headroom_or_the_smaller() -> None:
    a, b = Threshold("a", ">", 10.0), Threshold("b", ">", 10.0)
    values = {"a": {"api": 9.0, "web": 2.0}, "b": {"api": 5.0, "web": 8.0}}
    both = Condition("and", children=(Condition("leaf", a), Condition("leaf", b)))
    either = Condition("or", children=(Condition("leaf", a), Condition("leaf", b)))
    assert condition_headroom(both, values) == pytest.approx({"api": 0.5, "web": 0.8})
    assert condition_headroom(either, values) == pytest.approx({"api": 0.1, "web": 0.2})


def test_worst_value_depends_on_direction() -> None:
    assert worst_value(Threshold("x", ">", 1), [0.2, 0.7, math.nan]) == 0.7
    assert worst_value(Threshold("x", "<", 1), [0.2, 0.7]) == 0.2
    assert worst_value(Threshold("x", "<", 1), [math.nan]) is None


def test_risk_score_bounds_and_monotonicity() -> None:
    assert risk_score([]) == 0.0
    assert risk_score([1.0, 0.8]) == pytest.approx(0.2)
    assert risk_score([0.8, 0.3]) == pytest.approx(0.7)
    assert risk_score([-2.0]) == 1.0
    assert risk_score([0.9], firing=True) == 1.0
    # adding a rule far from its threshold does not raise the score (max, not sum)
    assert risk_score([0.5, 0.99, 0.99, 0.99]) == risk_score([0.5])
    # moving toward a threshold never lowers it
    scores = [risk_score([headroom(z, 0.05)]) for z in (0.0, 0.01, 0.03, 0.05, 0.08)]
    assert scores == sorted(scores) and 0.0 <= min(scores) and max(scores) <= 1.0


def test_design_brief_p_is_not_a_probability() -> None:
    # every metric at zero, far from its threshold: P = n, above 1 for n > 1 metrics
    far = [(0.0, 1.0), (0.0, 1.0), (0.0, 1.0)]
    assert design_brief_p(far, 3) == 3.0 > 1.0
    # and it *shrinks* as values approach their thresholds, the opposite of a trigger risk
    near = [(0.9, 1.0), (0.9, 1.0), (0.9, 1.0)]
    assert design_brief_p(near, 3) < design_brief_p(far, 3)
    # the risk score moves the other way and stays within [0, 1]
    assert risk_score([headroom(z, t) for z, t in near]) > risk_score([headroom(z, t) for z, t in far])
