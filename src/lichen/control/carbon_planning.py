"""When to start a carbon-aware job: the planner and the forecaster from history, as pure functions.

* :func:`plan` picks the start (at once, or on a wall-clock mark every ``grid_s``, 5 min) of a job of ``duration_s`` that must
  *finish* within ``deadline_s`` of ``now_s``: the window of lowest mean forecast intensity (ties: the
  earliest), or, with ``max_intensity``, the earliest window whose mean is at or below it (the lowest
  one when none is). A deadline shorter than the duration, or a forecast that covers no window, starts
  the job at once and says why.
* :func:`forecast_from_history` forecasts intensity from a trace's past alone, hourly: a seasonal
  profile (the mean of the same hour over the last 7 days, blended half and half with the same hour of
  the week over the last 4 weeks where that much history exists) plus the current anomaly (now minus
  the profile now), decaying with an e-folding time of 6 hours. The blend carries both the daily cycle
  (solar) and the weekly one (weekday demand); the decaying anomaly carries the weather of the moment
  (a windy day stays windy for a few hours), which "the same time yesterday" misses.

Both take and return plain arrays of Unix seconds and gCO₂e/kWh.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

HOUR_S = 3600.0
DAY_S = 24 * HOUR_S
WEEK_S = 7 * DAY_S
ANOMALY_DECAY_S = 6 * HOUR_S
DAYS_IN_PROFILE = 7
WEEKS_IN_PROFILE = 4


@dataclass(frozen=True)
class Plan:
    start_s: float
    forecast_mean: float | None
    """mean forecast intensity of the chosen window"""
    forecast_now_mean: float | None
    """mean forecast intensity of the window that starts at once"""
    reason: str
    warning: str | None = None


def _window_means(times_s: np.ndarray, values: np.ndarray, starts_s: np.ndarray, duration_s: float,
                  grid_s: float) -> np.ndarray:
    """Mean of the piecewise-linear forecast over ``[start, start + duration]`` for each start."""
    steps = max(1, int(round(duration_s / grid_s)))
    offsets = np.linspace(0.0, duration_s, steps + 1)
    points = np.interp(starts_s[:, None] + offsets[None, :], times_s, values)
    if duration_s <= 0:
        return points[:, 0]
    return (points[:, 1:] + points[:, :-1]).mean(axis=1) / 2  # trapezoids on a uniform grid


def plan(forecast_times_s: Sequence[float], forecast_values: Sequence[float], now_s: float, duration_s: float,
         deadline_s: float, *, max_intensity: float | None = None, grid_s: float = 300.0,
         latest_start_s: float | None = None) -> Plan:
    """The start of a job (see the module docs); ``latest_start_s`` bounds the start too (a starting
    deadline)."""
    times = np.asarray(forecast_times_s, dtype=float)
    values = np.asarray(forecast_values, dtype=float)
    duration_s = max(0.0, duration_s)
    latest_s = now_s + deadline_s - duration_s
    if latest_start_s is not None and latest_s >= now_s:
        latest_s = max(now_s, min(latest_s, latest_start_s))
    if latest_s < now_s:
        return Plan(now_s, None, None, "at once", f"the deadline ({deadline_s / HOUR_S:g} h) is shorter than the "
                    f"job's expected duration ({duration_s / HOUR_S:g} h): it starts at once")
    if len(times) < 2:
        return Plan(now_s, None, None, "at once: no forecast to plan with")
    first_mark = math.ceil(now_s / grid_s) * grid_s  # candidates: at once, then every grid mark (:00, :05, ...)
    marks = first_mark + grid_s * np.arange(max(0, int(math.floor((latest_s - first_mark) / grid_s)) + 1))
    starts = np.concatenate(([now_s], marks[(marks > now_s) & (marks <= latest_s)]))
    covered = starts[(starts >= times[0]) & (starts + duration_s <= times[-1])]
    if len(covered) == 0:
        return Plan(now_s, None, None, "at once: the forecast covers no window before the deadline")
    means = _window_means(times, values, covered, duration_s, grid_s)
    now_mean = float(means[0]) if covered[0] == now_s else None
    if max_intensity is not None:
        good = np.flatnonzero(means <= max_intensity)
        if len(good):
            i = int(good[0])
            return Plan(float(covered[i]), float(means[i]), now_mean,
                        f"the earliest window at or below {max_intensity:g} g/kWh")
    i = int(np.argmin(means))
    reason = "the lowest-intensity window before the deadline" if max_intensity is None else \
        f"no window at or below {max_intensity:g} g/kWh: the lowest one"
    return Plan(float(covered[i]), float(means[i]), now_mean, reason)


def _at(times: np.ndarray, values: np.ndarray, t_s: np.ndarray) -> np.ndarray:
    """History at ``t_s``, NaN outside it."""
    found = np.interp(t_s, times, values)
    found[(t_s < times[0]) | (t_s > times[-1])] = np.nan
    return found


def _profile(times: np.ndarray, values: np.ndarray, targets_s: np.ndarray) -> np.ndarray:
    """The seasonal profile at each target (see the module docs); NaN without a day of history."""
    daily = np.stack([_at(times, values, targets_s - d * DAY_S) for d in range(1, DAYS_IN_PROFILE + 1)])
    weekly = np.stack([_at(times, values, targets_s - w * WEEK_S) for w in range(1, WEEKS_IN_PROFILE + 1)])
    with warnings.catch_warnings():  # an all-NaN column only means "no history that far back"
        warnings.simplefilter("ignore", RuntimeWarning)
        day = np.nanmean(daily, axis=0)
        week = np.nanmean(weekly, axis=0)
    return np.where(np.isnan(week), day, 0.5 * day + 0.5 * week)


def forecast_from_history(times_s: Sequence[float], values: Sequence[float], now_s: float, horizon_s: float,
                          step_s: float = HOUR_S) -> tuple[list[float], list[float]]:
    """An intensity forecast for ``(now, now + horizon]`` from the history at or before ``now`` only."""
    times = np.asarray(times_s, dtype=float)
    vals = np.asarray(values, dtype=float)
    known = times <= now_s
    times, vals = times[known], vals[known]
    if len(times) < 2:
        raise ValueError("forecasting from history needs at least two samples before the planning time")
    targets = now_s + step_s * np.arange(0, int(math.ceil(horizon_s / step_s)) + 1)
    profile = _profile(times, vals, targets)
    current = float(np.interp(now_s, times, vals))
    if np.isnan(profile[0]):  # less than a day of history: persistence
        return targets.tolist(), [current] * len(targets)
    anomaly = current - profile[0]
    decay = np.exp(-(targets - now_s) / ANOMALY_DECAY_S)
    forecast = np.where(np.isnan(profile), current, profile + anomaly * decay)
    return targets.tolist(), forecast.tolist()
