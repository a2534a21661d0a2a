"""What ``lichen loadtest`` prints: a run's throughput, latency percentiles and failures, as plain data."""

from __future__ import annotations

from typing import Any

from lichen.control.load_profiles import LoadProfile
from lichen.trials.load_generation import LoadResult

PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def _ms(histogram: Any, percentile: float) -> float | None:
    return round(histogram.get_value_at_percentile(percentile) / 1000, 3) if histogram.get_total_count() else None


def summary(result: LoadResult, profile: LoadProfile, url: str, routes: tuple[str, ...]) -> dict[str, Any]:
    """The report as JSON-ready data: ``--json`` prints it, the table shows it."""
    latency, lag = result.latency, result.lag
    failed = sum(result.failures.values())
    errors = sum(n for status, n in result.statuses.items() if status >= 500) + failed
    ok = sum(n for status, n in result.statuses.items() if 200 <= status < 400)
    duration_s = profile.duration_s
    return {
        "url": url,
        "routes": list(routes),
        "profile": profile.name,
        "target_rps": round(profile.expected_requests() / duration_s, 3),
        "peak_rps": profile.peak_rps(),
        "duration_s": duration_s,
        "elapsed_s": round(result.elapsed_s, 3),
        "scheduled": result.scheduled,
        "sent": result.sent,
        "answered": result.answered,
        "throughput_rps": round(result.answered / result.elapsed_s, 3) if result.elapsed_s > 0 else 0.0,
        "ok_rps": round(ok / result.elapsed_s, 3) if result.elapsed_s > 0 else 0.0,
        "latency_ms": {**{f"p{p:g}": _ms(latency, p) for p in PERCENTILES},
                       "max": round(latency.get_max_value() / 1000, 3) if latency.get_total_count() else None,
                       "mean": round(latency.get_mean_value() / 1000, 3) if latency.get_total_count() else None},
        "statuses": {str(status): n for status, n in sorted(result.statuses.items())},
        "failures": dict(sorted(result.failures.items())),
        "error_ratio": round(errors / result.scheduled, 6) if result.scheduled else 0.0,
        "generator": {"lag_p99_ms": _ms(lag, 99.0), "lag_max_ms": round(lag.get_max_value() / 1000, 3)
                      if lag.get_total_count() else None, "cpu_s": round(result.cpu_s, 3),
                      "cpu_us_per_request": round(result.cpu_s * 1e6 / result.scheduled, 1) if result.scheduled else None,
                      "connections_opened": result.connections_opened},
    }
