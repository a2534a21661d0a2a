"""When to start a carbon-aware job: the planner and the forecaster from history, as pure functions.

* :func:`plan` picks the start (at once, or on a wall-clock mark every ``grid_s``, 5 min) of a job of ``duration_s`` that must
  *finish* within ``deadline_s`` of ``now_s``: the window of lowest mean forecast intensity (ties: the
  earliest), or, with ``max_intensity``, the earliest window whose mean is at or below it (the lowest
  one when none is). A deadline shorter than the duration, or a forecast that covers no window, starts
  the job at once and says why.
* :func:`forecast_from_history` forecasts intensity from a trace's past alone, hourly, as the equal-weight
  average of two models:

  - a **direct linear model per hour ahead** *h* (1 to 48 h), refitted at every call by ridge least squares
    on the trace's own last 28 days (every past hour whose value *h* hours later is known is a sample). It
    forecasts the departure from the daily profile at the target (the mean of the target's hour over the 7
    latest days already seen) from what is known at the origin: the anomaly (the value minus the mean of
    its hour over the 7 days before) now and 1, 2, 3, 6, 12 and 24 h ago (the weather of the moment and
    its momentum), the target's hour on the latest day and on the same day last week (each minus the
    profile), and the profile itself, plus a bias. The features are standardised and the ridge penalty
    (fixed, small) pulls towards "the profile plus the average departure". Fitted on each trace, it learns
    that trace's cycles and how long its anomalies last (wind fronts, cloudy days), with no constant tuned to
    one grid;
  - the **profile model**: a seasonal profile (the mean of the same hour over the last 7 days, blended half
    and half with the same hour of the week over the last 4 weeks where that much history exists) plus the
    current anomaly (now minus the profile now), decaying with an e-folding time of 6 hours.

  Averaging the two damps each one's estimation noise, which matters because the planner takes the minimum
  of the forecast and so favours windows whose error happens to be low. With less than two weeks of
  history (8 days to build the features, the rest to fit on) it is the profile model alone, with less
  than a day persistence; past 48 h ahead, the profile model alone. A direct forecast that leaves the
  history's range by more than its width (a degenerate fit) is dropped for the profile model; no forecast
  is negative. It reads nothing after ``now_s``.

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
FIT_DAYS = 28
"""the direct model's fitting window: the targets of its samples lie in the last 28 days"""
MIN_FIT_DAYS = 14
DIRECT_HOURS = 48
"""hours ahead the direct model forecasts; further out, the profile model alone"""
ORIGIN_LAGS_H = (0, 1, 2, 3, 6, 12, 24)
RIDGE = 0.1
"""ridge penalty per sample on standardised features (a tenth of one feature's variance)"""


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


def _profile_forecast(times: np.ndarray, values: np.ndarray, now_s: float, targets_s: np.ndarray) -> np.ndarray:
    """The profile model at each target (see the module docs): persistence without a day of history."""
    profile = _profile(times, values, targets_s)
    current = float(np.interp(now_s, times, values))
    if np.isnan(profile[0]):
        return np.full(len(targets_s), current)
    decay = np.exp(-(targets_s - now_s) / ANOMALY_DECAY_S)
    return np.where(np.isnan(profile), current, profile + (current - profile[0]) * decay)


def _direct(hourly: np.ndarray, hours_ahead: int) -> np.ndarray:
    """The direct model's forecast 1..``hours_ahead`` h past the last of ``hourly`` (oldest first, one an hour)."""
    last = len(hourly) - 1
    week_h = int(WEEK_S // HOUR_S)
    daily = np.full(len(hourly), np.nan)  # the daily profile: the mean of this hour and the 6 days before
    daily[week_h - 24:] = np.mean([hourly[week_h - 24 - 24 * j:len(hourly) - 24 * j] for j in range(DAYS_IN_PROFILE)],
                                  axis=0)
    ahead = np.arange(1, hours_ahead + 1)[:, None]            # (H, 1)
    seen = ahead - 24 * -(-ahead // 24)                        # back to the target's hour on the latest day seen
    anomaly = hourly - np.concatenate((np.full(24, np.nan), daily[:-24]))  # now minus the profile of the week before
    origins = np.arange(max(week_h + max(ORIGIN_LAGS_H), last - hours_ahead - FIT_DAYS * 24), last + 1)  # all exist
    origins = np.append(origins, last)                         # the last column: now, forecast and not fitted
    samples = np.broadcast_to(origins, (hours_ahead, len(origins)))
    targets = samples + ahead
    fitted = (targets <= last) & (targets > last - FIT_DAYS * 24)
    fitted[:, -1] = False
    target_profile = daily[samples + seen]
    features = np.stack([anomaly[samples - lag] for lag in ORIGIN_LAGS_H] + [
        hourly[samples + seen] - target_profile, hourly[targets - week_h] - target_profile, target_profile],
        axis=1)  # (H, F, N)
    residual = hourly[np.minimum(targets, last)] - target_profile  # weight 0 where not seen yet
    weight = (fitted / np.maximum(fitted.sum(axis=1, keepdims=True), 1))[:, None, :]  # (H, 1, N): per-horizon means
    centred = features - (weight * features).sum(axis=2, keepdims=True)
    scale = np.sqrt((weight * centred ** 2).sum(axis=2, keepdims=True))
    noise = 1e-9 * max(1.0, float(np.abs(hourly).max()))  # a spread of rounding error is no spread: a constant
    z = np.where(scale > noise, centred / np.where(scale > noise, scale, 1.0), 0.0)
    bias = (weight[:, 0] * residual).sum(axis=1)
    weighted = weight * z
    gram = weighted @ z.transpose(0, 2, 1) + RIDGE * np.eye(z.shape[1])
    coef = np.linalg.solve(gram, weighted @ (residual - bias[:, None])[..., None])[..., 0]
    return target_profile[:, -1] + bias + (z[:, :, -1] * coef).sum(axis=1)


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
    hours_ahead = min(DIRECT_HOURS, int(math.ceil((targets[-1] - now_s) / HOUR_S)))
    span_h = int((now_s - times[0]) // HOUR_S)
    if span_h < MIN_FIT_DAYS * 24 or hours_ahead < 1:
        return targets.tolist(), _profile_forecast(times, vals, now_s, targets).tolist()
    kept_h = min(span_h, FIT_DAYS * 24 + hours_ahead + 8 * 24)  # the features reach 8 days back
    hourly = np.interp(now_s - HOUR_S * np.arange(kept_h, -1, -1), times, vals)
    hours = now_s + HOUR_S * np.arange(hours_ahead + 1)
    direct = np.concatenate(([hourly[-1]], _direct(hourly, hours_ahead)))
    forecast = _profile_forecast(times, vals, now_s, targets)
    low, high = float(hourly.min()), float(hourly.max())
    if np.all(np.isfinite(direct)) and np.all(direct >= low - (high - low) - 1) and \
            np.all(direct <= high + (high - low) + 1):  # a fit gone wild (a degenerate trace) is not used
        near = targets <= hours[-1]
        forecast[near] = 0.5 * forecast[near] + 0.5 * np.interp(targets[near], hours, direct)
    return targets.tolist(), np.maximum(forecast, 0.0).tolist()
