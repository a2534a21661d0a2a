"""Error-budget arithmetic (lichen.control.error_budgets): attainment, budget left, burn rate, state."""

from __future__ import annotations

import math

import pytest

from lichen.control.error_budgets import (
    BURNING, EXHAUSTED, NO_TRAFFIC, OK, BurnAlertWindow, budget_left, burn_rate, percent, slo_status,
)

WINDOWS = (BurnAlertWindow("1h", "5m", 14.4, "page"), BurnAlertWindow("6h", "30m", 6.0, "page"))


def test_burn_rate_is_the_bad_ratio_over_the_budget() -> None:
    assert burn_rate(0.001, 0.999) == pytest.approx(1.0)
    assert burn_rate(0.0144, 0.999) == pytest.approx(14.4)
    assert burn_rate(0.0, 0.99) == 0.0
    assert burn_rate(None, 0.99) is None and burn_rate(math.nan, 0.99) is None


def test_budget_left_goes_negative_when_overspent() -> None:
    assert budget_left(0.0005, 0.999) == pytest.approx(0.5)
    assert budget_left(0.003, 0.999) == pytest.approx(-2.0)
    assert budget_left(None, 0.999) == 1.0  # no traffic spends nothing


def test_status_of_a_healthy_slo() -> None:
    s = slo_status(0.999, 1000.0, 0.0002, {"5m": 0.0, "1h": 0.0001, "6h": 0.0002, "30m": 0.0}, WINDOWS)
    assert s.state == OK and s.attainment == pytest.approx(0.9998) and s.budget_left == pytest.approx(0.8)
    assert s.burn_rates["1h"] == pytest.approx(0.1) and s.burning == []


def test_burning_needs_both_windows_of_an_alert_above_its_factor() -> None:
    fast = {"5m": 0.02, "1h": 0.015, "30m": 0.0, "6h": 0.0}
    s = slo_status(0.999, 1000.0, 0.0005, fast, WINDOWS)
    assert s.state == BURNING and s.burning == ["1h/5m"]
    short_only = {"5m": 0.02, "1h": 0.001, "30m": 0.0, "6h": 0.0}
    assert slo_status(0.999, 1000.0, 0.0005, short_only, WINDOWS).state == OK


def test_exhausted_once_the_window_spent_the_budget() -> None:
    s = slo_status(0.99, 500.0, 0.02, {"5m": 0.0, "1h": 0.0}, WINDOWS)
    assert s.state == EXHAUSTED and s.budget_left == pytest.approx(-1.0) and s.attainment == pytest.approx(0.98)


@pytest.mark.parametrize("requests", [None, 0.0, math.nan])
def test_no_traffic_has_no_attainment_and_spends_nothing(requests: float | None) -> None:
    s = slo_status(0.999, requests, None, {"5m": None, "1h": None}, WINDOWS)
    assert s.state == NO_TRAFFIC and s.attainment is None and s.budget_left == 1.0
    assert s.burn_rates == {"5m": None, "1h": None} and s.requests == 0.0


def test_percent() -> None:
    assert percent(0.99912) == "99.912%" and percent(1.0) == "100%" and percent(-0.5) == "-50%" and percent(None) == "-"
