"""CLI verbs: ``lichen carbon plan`` — when a job of a given length should start to emit least, on a trace."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from lichen.cli.output import console, print_json, print_table
from lichen.errors import ConfigError, DataError
from lichen.spec.quantities import parse_duration_s

carbon_app = typer.Typer(help="Plan work around the grid's carbon intensity.", no_args_is_help=True)


def _iso(t_s: float) -> str:
    return datetime.fromtimestamp(t_s, UTC).isoformat().replace("+00:00", "Z")


def _duration(text: str, option: str) -> float:
    try:
        seconds = parse_duration_s(text)
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc), where=option) from None
    if seconds <= 0:
        raise ConfigError(f"must be a positive duration, got {text}", where=option)
    return seconds


def carbon_plan_report(trace: Any, at_s: float, duration_s: float, deadline_s: float, forecast: Any | None = None,
                       max_intensity: float | None = None) -> dict[str, Any]:
    """What ``lichen carbon plan`` prints, as plain data (``trace``/``forecast``: :class:`IntensityTrace`)."""
    from lichen.control.carbon_planning import forecast_from_history, plan

    if forecast is not None:
        times, values, forecast_source = list(forecast.times_s), list(forecast.values), forecast.source
    else:
        times, values = forecast_from_history(trace.times_s, trace.values, at_s, deadline_s)
        forecast_source = f"history of {trace.source} before --at (a linear model per hour ahead fitted on its last 28 days, averaged with its daily and weekly profile plus the current anomaly)"
    chosen = plan(times, values, at_s, duration_s, deadline_s, max_intensity=max_intensity)

    def actual(start_s: float) -> float | None:
        try:
            return trace.mean(start_s, start_s + duration_s)
        except DataError:
            return None

    chosen_actual, now_actual = actual(chosen.start_s), actual(at_s)
    oracle = plan(trace.times_s, trace.values, at_s, duration_s, deadline_s, grid_s=60.0)  # hindsight, by the minute
    oracle_actual = actual(oracle.start_s) if oracle.forecast_mean is not None else None

    def saving(now: float | None, then: float | None) -> float | None:
        return (now - then) / now if now and then is not None else None

    return {
        "at": _iso(at_s), "duration_s": duration_s, "deadline_s": deadline_s, "forecast_source": forecast_source,
        "start": _iso(chosen.start_s), "wait_s": chosen.start_s - at_s, "reason": chosen.reason,
        "warning": chosen.warning,
        "chosen": {"forecast_mean": chosen.forecast_mean, "actual_mean": chosen_actual},
        "at_once": {"forecast_mean": chosen.forecast_now_mean, "actual_mean": now_actual},
        "savings": {"forecast": saving(chosen.forecast_now_mean, chosen.forecast_mean),
                    "actual": saving(now_actual, chosen_actual)},
        "oracle": ({"start": _iso(oracle.start_s), "actual_mean": oracle_actual,
                    "savings": saving(now_actual, oracle_actual)} if oracle_actual is not None else None),
    }


def carbon_plan(
    trace: Annotated[Path, typer.Option("--trace", help="A CSV of carbon intensity (any time and intensity "
                                        "columns); the actual intensity, and the history forecasts come from.")],
    duration: Annotated[str, typer.Option("--duration", help="How long the job runs, e.g. 2h.")],
    deadline: Annotated[str, typer.Option("--deadline", help="It must finish within this long of --at, e.g. 12h.")],
    at: Annotated[str | None, typer.Option("--at", help="When the job is due (ISO 8601, UTC when no zone, or "
                                           "Unix seconds); default: the trace's last time minus --deadline.")] = None,
    forecast: Annotated[Path | None, typer.Option("--forecast", help="A CSV forecast to plan with instead of the "
                                                  "trace's history.")] = None,
    max_intensity: Annotated[float | None, typer.Option("--max-intensity", help="Start at the first window at or "
                                                        "below this many g/kWh.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Plan a job's start at the lowest forecast intensity before its deadline, and say what it saves.

    Without --forecast only the trace's data before --at is used (a linear model per hour ahead, fitted
    on the trace's last 28 days, averaged with its daily and weekly profile plus the current anomaly); the
    trace's later data gives the actual intensity of the chosen
    window, of starting at once, and of the best window in hindsight (the oracle).

    Example: lichen carbon plan --trace de-2024.csv --at 2024-06-03T08:00 --duration 2h --deadline 12h --json
    """
    from lichen.green.intensity_traces import parse_time, read_trace

    duration_s, deadline_s = _duration(duration, "--duration"), _duration(deadline, "--deadline")
    if max_intensity is not None and not (math.isfinite(max_intensity) and max_intensity > 0):
        raise ConfigError(f"must be a number above 0, got {max_intensity:g}", where="--max-intensity")
    history = read_trace(trace)
    planned = read_trace(forecast) if forecast is not None else None
    if at is None:
        at_s = history.times_s[-1] - deadline_s
    else:
        try:
            at_s = parse_time(at)
            _iso(at_s)  # a time a calendar can show: not NaN, not past year 9999
        except (ValueError, OverflowError, OSError) as exc:
            raise ConfigError(f"not an ISO 8601 time or Unix seconds: {at} ({exc})", where="--at") from None
    if planned is None and (len(history.times_s) < 2 or history.times_s[1] > at_s):
        raise ConfigError(f"{trace} has less than two rows before {_iso(at_s)}: nothing to forecast from "
                          "(give --forecast, or a later --at)", where="--at")
    for name, series, start_s, end_s in ((trace, history, at_s - 29 * 86400, at_s + deadline_s),
                                         (forecast, planned, at_s, at_s + deadline_s)):
        problem = series.span_problem(start_s, end_s) if series is not None else None
        if problem is not None:  # never plan over made-up data: a gap is refused where it is
            raise DataError(problem, where=str(name))
    report = carbon_plan_report(history, at_s, duration_s, deadline_s, planned, max_intensity)
    if as_json:
        print_json(report)
        return
    if report["warning"]:
        console.print(f"warning: {report['warning']}", markup=False)
    console.print(f"start {report['start']} (wait {report['wait_s'] / 3600:.2f} h): {report['reason']}", markup=False)

    def g(value: float | None) -> str:
        return "" if value is None else f"{value:.1f}"

    def pct(value: float | None) -> str:
        return "" if value is None else f"{value:.1%}"

    rows = [["chosen window", g(report["chosen"]["forecast_mean"]), g(report["chosen"]["actual_mean"])],
            ["starting at once", g(report["at_once"]["forecast_mean"]), g(report["at_once"]["actual_mean"])],
            ["savings", pct(report["savings"]["forecast"]), pct(report["savings"]["actual"])]]
    if report["oracle"]:
        rows.append([f"oracle ({report['oracle']['start']})", "", g(report["oracle"]["actual_mean"])])
    print_table("mean intensity, g/kWh", ["", "forecast", "actual"], rows)
    console.print(f"forecast: {report['forecast_source']}", markup=False)


def register(app: typer.Typer) -> None:
    """Add this module's verbs to the root app."""
    carbon_app.command("plan")(carbon_plan)
    app.add_typer(carbon_app, name="carbon")
