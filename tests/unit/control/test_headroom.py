"""Headroom per threshold rule, risk per rule and service, and why the design brief's P is not a probability."""

from __future__ import annotations

import math

import pytest

from lichen.control.headroom import (
    PENDING_RISK,
    AlertProgress,
    Condition,
    Threshold,
    alert_progress,
    condition_headroom,
    condition_of,
    design_brief_p,
    headroom,
    healthy_bound,
    risk_score,
    rule_risk,
    worst_value,
)
from lichen.control.value_ranges import NON_NEGATIVE, UNBOUNDED, UNIT_INTERVAL, expression_range


@pytest.mark.parametrize("op", [">", ">="])
def test_upper_threshold_headroom_runs_from_the_floor_to_the_threshold(op: str) -> None:
    for value_range in (UNBOUNDED, NON_NEGATIVE, UNIT_INTERVAL):  # an unknown floor is taken as 0
        assert headroom(0.0, 0.05, op, value_range) == 1.0
        assert headroom(0.025, 0.05, op, value_range) == pytest.approx(0.5)
        assert headroom(0.05, 0.05, op, value_range) == 0.0
        assert headroom(0.1, 0.05, op, value_range) == pytest.approx(-1.0)
    # a known floor other than 0: distance over the room between floor and threshold
    assert headroom(2.0, 10.0, op, (2.0, math.inf)) == 1.0
    assert headroom(6.0, 10.0, op, (2.0, math.inf)) == pytest.approx(0.5)


@pytest.mark.parametrize("op", ["<", "<="])
def test_lower_threshold_on_a_bounded_quantity_is_relative_to_its_healthy_maximum(op: str) -> None:
    # up or a success ratio: healthy at 1, so up = 1 is as far from `< 0.9` as it gets
    assert headroom(1.0, 0.9, op, UNIT_INTERVAL) == pytest.approx(1.0)
    assert headroom(0.95, 0.9, op, UNIT_INTERVAL) == pytest.approx(0.5)
    assert headroom(0.9, 0.9, op, UNIT_INTERVAL) == 0.0
    assert headroom(0.8, 0.9, op, UNIT_INTERVAL) == pytest.approx(-1.0)
    assert headroom(0.0, 0.9, op, UNIT_INTERVAL) == pytest.approx(-9.0)
    assert healthy_bound(op, 0.9, UNIT_INTERVAL) == 1.0


@pytest.mark.parametrize("op", ["<", "<="])
def test_lower_threshold_without_a_maximum_is_the_relative_distance(op: str) -> None:
    # e.g. a request rate that must not drop below 0.9/s: no healthy maximum, so how much z may shrink
    assert headroom(0.9, 0.9, op, NON_NEGATIVE) == 0.0
    assert headroom(1.8, 0.9, op, NON_NEGATIVE) == pytest.approx(0.5)
    assert headroom(0.45, 0.9, op, NON_NEGATIVE) == pytest.approx(-1.0)
    assert headroom(0.0, 0.9, op, NON_NEGATIVE) == -math.inf
    assert headroom(0.99, 0.9, op, NON_NEGATIVE) > headroom(0.95, 0.9, op, NON_NEGATIVE)
    assert healthy_bound(op, 0.9, NON_NEGATIVE) == math.inf


def test_a_threshold_at_the_healthy_bound_is_a_flag() -> None:
    assert headroom(0.0, 0.0, ">", NON_NEGATIVE) == 1.0  # `errors > 0` with no errors
    assert headroom(2.0, 0.0, ">", NON_NEGATIVE) == -math.inf  # no scale past it: breached
    assert headroom(1.0, 0.0, ">", UNIT_INTERVAL) == -1.0
    assert headroom(1.0, 1.0, "<", UNIT_INTERVAL) == 1.0  # `up < 1` with up = 1
    assert headroom(0.0, 1.0, "<", UNIT_INTERVAL) == -1.0


def test_headroom_undefined_without_a_healthy_side() -> None:
    assert headroom(1.0, -1.0, ">") is None  # unknown floor below a negative threshold
    assert headroom(1.0, 0.0, ">=", NON_NEGATIVE) is None  # always holds
    assert headroom(1.0, 0.0, "<") is None  # unbounded and θ <= 0: no healthy side
    assert headroom(0.5, 2.0, "<", UNIT_INTERVAL) is None  # always holds
    assert headroom(math.nan, 1.0) is None
    assert headroom(1.0, math.inf) is None


def test_value_ranges_come_from_promql_semantics_and_naming_conventions() -> None:
    assert expression_range("up") == UNIT_INTERVAL
    assert expression_range("avg_over_time(up[10m])") == UNIT_INTERVAL
    assert expression_range("disk_free_ratio") == UNIT_INTERVAL
    assert expression_range("1 - avg by (service) (up)") == UNIT_INTERVAL
    assert expression_range("sum(rate(errors_total[5m])) / sum(rate(requests_total[5m]))") == NON_NEGATIVE
    assert expression_range("increase(lichen_replica_restarts_total[10m])") == NON_NEGATIVE
    assert expression_range("clamp(temperature_celsius, -10, 50)") == (-10.0, 50.0)
    assert expression_range("x > bool 1") == UNIT_INTERVAL
    assert expression_range("temperature_celsius") == UNBOUNDED
    assert expression_range("delta(temperature_celsius[5m])") == UNBOUNDED


def test_condition_parses_thresholds_ranges_and_orientation() -> None:
    leaf = condition_of("rate(errors_total[5m]) > 0.5")
    assert leaf == Condition("leaf", Threshold("rate(errors_total{}[5m])", ">", 0.5, NON_NEGATIVE))
    flipped = condition_of("0.9 > avg_over_time(up[10m])")
    assert flipped is not None and flipped.threshold == Threshold("avg_over_time(up{}[10m])", "<", 0.9, UNIT_INTERVAL)
    assert not flipped.threshold.fires_above
    burn = condition_of("(a / b) > 14.4 * (1 - 0.999) and (c / d) > 14.4 * (1 - 0.999)")
    assert burn is not None and burn.kind == "and"
    assert [t.threshold for t in burn.thresholds()] == [pytest.approx(0.0144)] * 2
    # equality against a bound of the range is the inequality it means
    assert condition_of("up == 0") == Condition("leaf", Threshold("up{}", "<=", 0.0, UNIT_INTERVAL))
    assert condition_of("up != 1") == Condition("leaf", Threshold("up{}", "<", 1.0, UNIT_INTERVAL))
    assert condition_of("temperature == 3") is None
    assert condition_of("x > bool 3") is None
    assert condition_of("x > 1 or absent(y)") is None
    assert condition_of("x < -1") is None  # no healthy side
    # a side without a threshold filters the series z is measured on
    assert condition_of("x > 1 unless y == 0") == Condition("leaf", Threshold("(x{}) unless (y{} == 0)", ">", 1.0))
    assert condition_of("x > 1 and on (service) y") == Condition(
        "leaf", Threshold("(x{}) and on (service) (y{})", ">", 1.0))
    with pytest.raises(ValueError):
        condition_of("x >")


def test_and_takes_the_larger_headroom_or_the_smaller() -> None:
    a, b = Threshold("a", ">", 10.0), Threshold("b", ">", 10.0)
    values = {"a": {"api": 9.0, "web": 2.0, "db": 1.0}, "b": {"api": 5.0, "web": 8.0}}
    both = Condition("and", children=(Condition("leaf", a), Condition("leaf", b)))
    either = Condition("or", children=(Condition("leaf", a), Condition("leaf", b)))
    # `and` needs both sides: db has no `b` series, so the rule has no data for db (it cannot fire)
    assert condition_headroom(both, values) == pytest.approx({"api": 0.5, "web": 0.8})
    assert condition_headroom(either, values) == pytest.approx({"api": 0.1, "web": 0.2, "db": 0.9})


def test_worst_value_depends_on_direction() -> None:
    assert worst_value(Threshold("x", ">", 1), [0.2, 0.7, math.nan]) == 0.7
    assert worst_value(Threshold("x", "<", 1), [0.2, 0.7]) == 0.2
    assert worst_value(Threshold("x", "<", 1), [math.nan]) is None


def test_rule_risk_is_distance_then_the_for_wait_and_1_only_when_firing() -> None:
    assert rule_risk(1.0) == 0.0
    assert rule_risk(0.5) == pytest.approx(0.45)
    assert rule_risk(0.0) == pytest.approx(PENDING_RISK)  # at the threshold, not yet pending: below 1
    assert rule_risk(-3.0) == pytest.approx(PENDING_RISK)
    assert rule_risk(None) is None  # no data: said, not shown as 0
    pending = [rule_risk(-0.5, AlertProgress("pending", s), for_s=300) for s in (0, 150, 299, 400)]
    assert pending == pytest.approx([0.9, 0.945, 0.9 + 0.09 * 299 / 300, 0.99])
    assert all(r < 1.0 for r in pending)
    assert rule_risk(None, AlertProgress("pending", 10), for_s=0) == 0.99  # an alert without data still counts
    assert rule_risk(0.8, AlertProgress("firing")) == 1.0
    assert rule_risk(None, AlertProgress("firing")) == 1.0


def test_alert_progress_takes_the_most_advanced_alert_per_service() -> None:
    now = 1000.0
    alerts = [("api", "pending", 900.0), ("api", "pending", 700.0), ("web", "pending", 950.0),
              ("web", "firing", 100.0), ("db", "inactive", 10.0)]
    assert alert_progress(alerts, now) == {"api": AlertProgress("pending", 300.0), "web": AlertProgress("firing")}


def test_risk_score_bounds_and_monotonicity() -> None:
    assert risk_score([]) is None
    assert risk_score([None, None]) is None
    assert risk_score([rule_risk(1.0), rule_risk(0.8)]) == pytest.approx(0.18)
    assert risk_score([rule_risk(-2.0)]) == pytest.approx(PENDING_RISK)
    assert risk_score([rule_risk(0.9), 1.0]) == 1.0
    # adding a rule far from its threshold does not raise the score (max, not sum)
    assert risk_score([rule_risk(h) for h in (0.5, 0.99, 0.99, 0.99)]) == risk_score([rule_risk(0.5)])
    # moving toward a threshold never lowers it
    scores = [rule_risk(headroom(z, 0.05)) for z in (0.0, 0.01, 0.03, 0.05, 0.08)]
    assert scores == sorted(scores) and 0.0 <= min(scores) and max(scores) < 1.0


def test_design_brief_p_is_not_a_probability() -> None:
    # every metric at zero, far from its threshold: P = n, above 1 for n > 1 metrics
    far = [(0.0, 1.0), (0.0, 1.0), (0.0, 1.0)]
    assert design_brief_p(far, 3) == 3.0 > 1.0
    # and it *shrinks* as values approach their thresholds, the opposite of a trigger risk
    near = [(0.9, 1.0), (0.9, 1.0), (0.9, 1.0)]
    assert design_brief_p(near, 3) < design_brief_p(far, 3)
    # the risk score moves the other way and stays within [0, 1]
    assert risk_score([rule_risk(headroom(z, t)) for z, t in near]) > risk_score(
        [rule_risk(headroom(z, t)) for z, t in far])
