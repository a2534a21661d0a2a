"""SLO standing per service, read from the series store with the burn-rate alerts' own expressions.

``lichen slo`` (through the control API's ``/api/v1/query``) and the dashboard's SLO panel (on the
engine directly) both call :func:`slo_report` with a ``query(expr, time_s)`` function; the arithmetic
is :mod:`lichen.control.error_budgets`. Per service and SLO it evaluates, at one instant:

* the bad-event ratio over the SLO window and over each burn-rate window of the default alerts
  (5m, 30m, 1h, 6h, 3d) -- :func:`lichen.observe.default_rules.error_ratio` and
  :func:`~lichen.observe.default_rules.slow_ratio`, the expressions of ``LichenErrorBudgetBurn`` and
  ``LichenLatencyBudgetBurn`` (for availability with ``or ... * 0``, so a service that never answered
  a 5xx reads 0, not "no data");
* the number of requests in the window (``increase`` of the same counters), to tell "no traffic".

The window is ``observability.retention`` (the store holds nothing older), at most 30 days, the
usual SLO window of Sloth and Pyrra; ``--window`` picks a shorter one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

from lichen.control.error_budgets import BurnAlertWindow, slo_status
from lichen.errors import ConfigError
from lichen.observe.default_rules import BURN_WINDOWS, error_ratio, go_float, latency_bucket_s, slow_ratio
from lichen.spec.models import SloSpec
from lichen.spec.quantities import format_duration, parse_duration_s

MAX_WINDOW_S = 30 * 86400.0
ALERT_WINDOWS = tuple(BurnAlertWindow(long, short, factor, severity) for long, short, factor, severity, _ in BURN_WINDOWS)
BURN_RATE_WINDOWS = tuple(sorted({w for a in ALERT_WINDOWS for w in (a.long, a.short)}, key=parse_duration_s))

Query = Callable[[str, float], list[tuple[dict[str, str], float]]]
"""``(expr, time_s) -> [(labels, value)]``, as ``Engine.instant_samples``"""


def window_of(text: str | None, retention_s: float) -> float:
    """The SLO window in seconds: ``text`` (``7d``), else the retention capped at 30 days; a window longer
    than the retention is refused, since the store could not cover it."""
    if text is None:
        return min(retention_s, MAX_WINDOW_S)
    try:
        window_s = parse_duration_s(text)
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc), where="--window") from None
    if window_s <= 0:
        raise ConfigError(f"must be a positive duration, got {text}", where="--window")
    if window_s > retention_s:
        raise ConfigError(f"{text} is longer than observability.retention ({format_duration(retention_s)}): the store "
                          "holds no older samples", where="--window")
    return window_s


def slo_exprs(service: str, slo: SloSpec, window: str) -> dict[str, dict[str, Any]]:
    """Per SLO (``availability``, ``latency``): its objective, the requests expression over ``window`` and
    the bad-ratio expression of each window (``window`` itself and the burn-rate windows)."""
    sel = f'service="{service}"'
    le = go_float(latency_bucket_s(slo.latency_ms))
    windows = dict.fromkeys([window, *BURN_RATE_WINDOWS])
    def total(w: str) -> str:
        return f"sum by (service) (rate(lichen_requests_total{{{sel}}}[{w}]))"

    return {
        "availability": {
            "objective": slo.availability,
            "objective_text": f"{slo.availability * 100:g}% not 5xx",
            "requests": f"sum by (service) (increase(lichen_requests_total{{{sel}}}[{window}]))",
            "ratios": {w: f"({error_ratio(sel, w)}) or ({total(w)} * 0)" for w in windows},
        },
        "latency": {
            "objective": slo.latency_target,
            "objective_text": f"{slo.latency_target * 100:g}% <= {slo.latency_ms:g} ms",
            "requests": f"sum by (service) (increase(lichen_request_duration_seconds_count{{{sel}}}[{window}]))",
            "ratios": {w: slow_ratio(sel, le, w) for w in windows},
        },
    }


def _value(query: Query, expr: str, now_s: float) -> float | None:
    samples = query(expr, now_s)
    if not samples:
        return None
    value = samples[0][1]
    return None if math.isnan(value) else value


def slo_report(query: Query, slos: Mapping[str, SloSpec], window_s: float, now_s: float) -> dict[str, Any]:
    """Every SLO of every service in ``slos`` at ``now_s`` over ``window_s``, as plain data."""
    window = format_duration(window_s)
    promql_window = f"{int(window_s)}s" if window_s >= 1 else window
    rows = []
    for service, slo in slos.items():
        for name, exprs in slo_exprs(service, slo, promql_window).items():
            ratios = {w: _value(query, e, now_s) for w, e in exprs["ratios"].items()}
            status = slo_status(exprs["objective"], _value(query, exprs["requests"], now_s), ratios[promql_window],
                                {w: ratios[w] for w in BURN_RATE_WINDOWS}, ALERT_WINDOWS)
            rows.append({"service": service, "slo": name, "objective_text": exprs["objective_text"],
                         "error_budget": 1.0 - exprs["objective"], **asdict(status)})
    return {"window": window, "window_s": window_s, "time": now_s, "burn_rate_windows": list(BURN_RATE_WINDOWS),
            "alert_windows": [asdict(a) for a in ALERT_WINDOWS], "slos": rows}
