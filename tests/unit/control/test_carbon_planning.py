"""The carbon-aware planner and the forecaster from history (lichen.control.carbon_planning): pure, on arrays."""

from __future__ import annotations

import numpy as np
import pytest

from lichen.control.carbon_planning import DAY_S, HOUR_S, _profile_forecast, forecast_from_history, plan

T0 = 1_717_200_000.0  # 2024-06-01T00:00Z


def hourly(values: list[float], start_s: float = T0) -> tuple[list[float], list[float]]:
    return [start_s + i * HOUR_S for i in range(len(values))], values


def test_the_lowest_mean_window_that_finishes_before_the_deadline_wins() -> None:
    # hourly points, read linearly between them: 100 from 3 h to 5 h, 50 from 7 h to 9 h
    times, values = hourly([500, 400, 300, 100, 100, 100, 300, 50, 50, 50, 600])
    chosen = plan(times, values, T0, 2 * HOUR_S, 7 * HOUR_S)  # must finish by T0 + 7 h: the 50s are too late
    assert chosen.start_s == T0 + 3 * HOUR_S and chosen.forecast_mean == pytest.approx(100.0)
    assert chosen.forecast_now_mean == pytest.approx(((500 + 400) / 2 + (400 + 300) / 2) / 2)
    later = plan(times, values, T0, 2 * HOUR_S, 10 * HOUR_S)
    assert later.start_s == T0 + 7 * HOUR_S and later.forecast_mean == pytest.approx(50.0)


def test_ties_go_to_the_earliest_window_and_a_flat_forecast_starts_at_once() -> None:
    times, values = hourly([200.0] * 12)
    assert plan(times, values, T0, HOUR_S, 10 * HOUR_S).start_s == T0


def test_max_intensity_takes_the_first_good_enough_window_else_the_lowest() -> None:
    times, values = hourly([500, 500, 500, 200, 200, 200, 200, 100, 100, 100])
    good = plan(times, values, T0, HOUR_S, 9 * HOUR_S, max_intensity=210)
    assert T0 + 2.5 * HOUR_S <= good.start_s <= T0 + 3 * HOUR_S and good.forecast_mean <= 210  # on the way down
    assert "earliest window at or below 210" in good.reason
    strict = plan(times, values, T0, HOUR_S, 9 * HOUR_S, max_intensity=50)
    assert strict.start_s == T0 + 7 * HOUR_S and "no window at or below 50" in strict.reason


def test_a_deadline_shorter_than_the_job_or_no_forecast_starts_at_once_saying_why() -> None:
    times, values = hourly([300, 100, 100])
    short = plan(times, values, T0, 5 * HOUR_S, 3 * HOUR_S)
    assert short.start_s == T0 and short.warning and "shorter than the job's expected duration" in short.warning
    uncovered = plan(times, values, T0 + 10 * HOUR_S, HOUR_S, 4 * HOUR_S)
    assert uncovered.start_s == T0 + 10 * HOUR_S and "covers no window" in uncovered.reason
    assert "no forecast" in plan([], [], T0, HOUR_S, 4 * HOUR_S).reason


def _daily(days: int, noise: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = T0 + HOUR_S * np.arange(days * 24)
    return t, 300 + 100 * np.sin(2 * np.pi * (t - T0) / DAY_S) + rng.normal(0, noise, len(t))


def test_a_clean_daily_cycle_is_forecast_exactly() -> None:
    t, v = _daily(30)
    now = T0 + 20 * DAY_S + 5 * HOUR_S
    times, forecast = forecast_from_history(t, v, now, DAY_S)
    truth = 300 + 100 * np.sin(2 * np.pi * (np.array(times) - T0) / DAY_S)
    assert np.allclose(forecast, truth, atol=1e-6)


def test_the_forecast_never_reads_past_now() -> None:
    t, v = _daily(30, noise=20)
    now = T0 + 20 * DAY_S + 5 * HOUR_S
    before = forecast_from_history(t, v, now, DAY_S)
    changed = v.copy()
    changed[t > now] += 1000  # the future changes: the forecast must not
    assert forecast_from_history(t, changed, now, DAY_S) == before


def _with_weather(days: int, seed: int, persistence: float = 0.97) -> tuple[np.ndarray, np.ndarray]:
    """A daily cycle plus "weather": an AR(1) anomaly that keeps ``persistence`` of itself from hour to hour."""
    t, v = _daily(days)
    rng = np.random.default_rng(seed)
    weather = np.zeros(len(t))
    for k in range(1, len(t)):
        weather[k] = persistence * weather[k - 1] + rng.normal(0, 10)
    return t, v + weather


def test_the_fitted_model_carries_the_weather_better_than_the_profile_model() -> None:
    # weather that lasts (an e-folding time of ~33 h, not the profile model's fixed 6 h): fitted on the trace,
    # the forecast learns it and misses the next 12 h by clearly less than the profile model alone (~0.75 of
    # its mean squared error)
    errors: dict[str, list[float]] = {"forecast": [], "profile": []}
    for seed in range(3):
        t, v = _with_weather(40, seed)
        for now_index in range(29 * 24, 39 * 24, 5):
            past = slice(0, now_index + 1)
            times, forecast = forecast_from_history(t[past], v[past], t[now_index], 12 * HOUR_S)
            truth = v[now_index:now_index + 13]
            errors["forecast"].append(float(np.mean((np.array(forecast) - truth) ** 2)))
            profile = _profile_forecast(t[past], v[past], t[now_index], np.array(times))
            errors["profile"].append(float(np.mean((profile - truth) ** 2)))
    assert np.mean(errors["forecast"]) < 0.85 * np.mean(errors["profile"])


def test_a_trend_on_the_daily_cycle_is_learned_exactly() -> None:
    # intensity falling 0.25 g/kWh an hour (a grid decarbonising by the week; it stays positive): the profile model lags the trend,
    # the direct model recovers it exactly (a constant departure from the profile per hour ahead), so the
    # forecast's error is exactly half the profile model's
    t, v = _daily(30)
    v = v - 0.25 * (t - T0) / HOUR_S
    now = T0 + 25 * DAY_S + 7 * HOUR_S
    past = t <= now
    times, forecast = forecast_from_history(t, v, now, DAY_S)
    truth = np.interp(times, t, v)
    profile = _profile_forecast(t[past], v[past], now, np.array(times))
    assert np.abs(profile - truth).max() > 20
    assert np.allclose(np.array(forecast) - truth, (profile - truth) / 2, atol=1e-6)


def test_the_forecast_starts_at_the_latest_value_on_any_step_and_horizon() -> None:
    t, v = _with_weather(30, seed=4)
    _, calm = forecast_from_history(t, v, t[-1], 3 * DAY_S, step_s=900)
    v[-1] += 80  # a windless (dirty) hour now
    times, forecast = forecast_from_history(t, v, t[-1], 3 * DAY_S, step_s=900)
    assert times[0] == t[-1] and forecast[0] == pytest.approx(v[-1])
    assert np.allclose(np.diff(times), 900) and times[-1] == t[-1] + 3 * DAY_S and np.all(np.isfinite(forecast))
    assert 0 < forecast[4] - calm[4] < 80  # an hour on: partly carried over
    # past 48 h ahead: the profile model alone
    far = np.array(times) > t[-1] + 48 * HOUR_S
    assert np.allclose(np.array(forecast)[far], _profile_forecast(t, v, t[-1], np.array(times))[far])


def test_under_two_weeks_of_history_is_the_profile_model() -> None:
    t, v = _with_weather(10, seed=5)
    times, forecast = forecast_from_history(t, v, t[-1], DAY_S)
    assert np.allclose(forecast, _profile_forecast(t, v, t[-1], np.array(times)))
    assert forecast[0] == pytest.approx(v[-1])


def test_less_than_a_day_of_history_is_persistence_and_one_sample_is_refused() -> None:
    times, values = hourly([100, 200, 300])
    _, forecast = forecast_from_history(times, values, T0 + 2 * HOUR_S, 5 * HOUR_S)
    assert forecast == [300.0] * len(forecast)
    with pytest.raises(ValueError, match="at least two samples"):
        forecast_from_history(times, values, T0, HOUR_S)


@pytest.mark.parametrize("off_hour_s", [0.0, 1234.0, 1800.0])
def test_a_noiseless_trace_off_the_hour_gives_a_sane_forecast(off_hour_s: float) -> None:
    # a pure daily cycle makes some features constant to rounding error; standardising them must not blow up
    t, v = _daily(30)
    times, forecast = forecast_from_history(t, v, t[-1] - off_hour_s, DAY_S)
    assert 195 <= min(forecast) and max(forecast) <= 405
