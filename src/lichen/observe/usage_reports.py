"""What each service used over a window, read from the embedded Prometheus for ``lichen advise``.

:func:`service_usage` turns raw samples into the plain :class:`lichen.control.advising.Usage` the advisor
takes:

* each replica's CPU use per step: ``lichen_replica_cpu_seconds_total`` (:mod:`lichen.runtime.replica_usage`)
  differenced over spans of at least ``step_s`` (a counter reset starts a new span), in cores;
* each replica's memory: every sample of the limited quantity (``lichen_replica_memory_working_set_bytes``
  under cgroups, ``lichen_replica_memory_data_bytes`` under ``RLIMIT_DATA``), and the median working set
  (what draws power);
* the service's in-flight requests at the gateway and the autoscaler's desired replicas, every sample;
* the CPU seconds, and the energy, carbon and embodied carbon of :func:`~lichen.observe.energy_reports.energy_report`.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from typing import Any

from lichen.control.advising import Settings, Usage, advise
from lichen.observe.energy_reports import LOOKBACK_S, RangeSamples, counter_increase, energy_report

MEMORY_METRICS = {"working set": "lichen_replica_memory_working_set_bytes",
                  "data segment": "lichen_replica_memory_data_bytes"}


def usage_step_s(covered_s: float, scrape_interval_s: float) -> float:
    """CPU is averaged per minute, as metrics-server samples for the VPA, or finer over a short span of
    samples (a thirtieth of it), never finer than two scrapes."""
    return max(2 * scrape_interval_s, min(60.0, covered_s / 30))


def step_rates(points: list[tuple[float, float]], start_s: float, step_s: float) -> list[float]:
    """A counter's rate over consecutive spans of at least ``step_s`` inside ``[start_s, ...]``; a reset (a
    drop) starts a new span."""
    rates: list[float] = []
    anchor: tuple[float, float] | None = None
    for t_s, value in points:
        if t_s < start_s or math.isnan(value):
            continue
        if anchor is None or value < anchor[1]:
            anchor = (t_s, value)
        elif t_s - anchor[0] >= step_s:
            rates.append((value - anchor[1]) / (t_s - anchor[0]))
            anchor = (t_s, value)
    return rates


def _range(series: RangeSamples, selector: str, window_s: float, now_s: float) -> list[tuple[dict[str, str], list]]:
    return series(f"{selector}[{int(math.ceil(window_s))}s]", now_s)


def service_usage(series: RangeSamples, services: list[str], window_s: float, now_s: float, *,
                  scrape_interval_s: float, memory_basis: str = "working set") -> dict[str, Usage]:
    """Each named service's :class:`Usage` over the ``window_s`` before ``now_s`` (its ``window_s``: the part of
    it the samples cover)."""
    start_s = now_s - window_s
    found: dict[str, dict[str, Any]] = {s: {"cpu_cores": [], "memory_bytes": [], "inflight": [], "desired_replicas": [],
                                            "resident": [], "cpu_s": 0.0, "replica_s": 0.0} for s in services}
    cpu_series = [(labels, points) for labels, points in
                  _range(series, "lichen_replica_cpu_seconds_total", window_s + LOOKBACK_S, now_s)
                  if labels.get("service", "") in found]
    inside = [[t for t, _ in points if t >= start_s] for _, points in cpu_series]
    first_s = min((times[0] for times in inside if times), default=now_s)
    covered_s = max(scrape_interval_s, now_s - first_s)  # the window may reach back before the first sample
    step_s = usage_step_s(covered_s, scrape_interval_s)
    for (labels, points), times in zip(cpu_series, inside, strict=True):
        entry = found[labels["service"]]
        entry["cpu_cores"].extend(step_rates(points, start_s, step_s))
        entry["cpu_s"] += counter_increase(points, start_s)
        if times:
            entry["replica_s"] += times[-1] - times[0] + scrape_interval_s
    for key, metric in (("memory_bytes", MEMORY_METRICS[memory_basis]),
                        ("resident", MEMORY_METRICS["working set"]),
                        ("inflight", "lichen_gateway_inflight_requests"),
                        ("desired_replicas", "lichen_autoscaler_desired_replicas")):
        for labels, points in _range(series, metric, window_s, now_s):
            entry = found.get(labels.get("service", ""))
            if entry is not None:
                entry[key].extend(v for t, v in points if t >= start_s and not math.isnan(v))
    report = {row["service"]: row for row in energy_report(series, window_s, now_s)["services"]}
    usages = {}
    for service, entry in found.items():
        row = report.get(service, {})
        usages[service] = Usage(
            window_s=covered_s, cpu_cores=tuple(entry["cpu_cores"]), memory_bytes=tuple(entry["memory_bytes"]),
            inflight=tuple(entry["inflight"]), desired_replicas=tuple(entry["desired_replicas"]),
            resident_bytes=float(statistics.median(entry["resident"])) if entry["resident"] else 0.0,
            cpu_s=entry["cpu_s"], energy_j=(row.get("energy_j") or {}).get("value"),
            carbon_g=(row.get("carbon_g") or {}).get("value"), embodied_g=row.get("embodied_g"),
            mean_replicas=entry["replica_s"] / covered_s)
    return usages


def settings_of(spec: Any) -> Settings:
    """The advisor's :class:`Settings` from a :class:`lichen.spec.models.ServiceSpec`."""
    scale = spec.autoscale
    return Settings(replicas=spec.replicas, cpu=spec.resources.cpu, memory_bytes=spec.resources.memory,
                    max_concurrency=spec.max_concurrency,
                    autoscale=None if scale is None else {"min": scale.min, "max": scale.max, "metric": scale.metric,
                                                          "target": scale.target})


def advice_report(series: RangeSamples, services: dict[str, Any], window_s: float, now_s: float, *,
                  scrape_interval_s: float, memory_basis: str, only: str | None = None) -> dict[str, Any]:
    """``lichen advise``'s report: each service's advice (:func:`lichen.control.advising.advise`), as plain data."""
    names = [name for name in sorted(services) if only is None or name == only]
    usages = service_usage(series, names, window_s, now_s, scrape_interval_s=scrape_interval_s,
                           memory_basis=memory_basis)
    rows = []
    for name in names:
        advice = advise(name, usages[name], settings_of(services[name]), memory_basis=memory_basis)
        rows.append(dataclasses.asdict(advice))
    total = {key: sum(r[key] for r in rows if r[key] is not None) if any(r[key] is not None for r in rows)
             else None for key in ("energy_kwh_per_day", "carbon_g_per_day", "embodied_g_per_day")}
    covered_s = max((u.window_s for u in usages.values()), default=0.0)
    return {"window_s": window_s, "covered_s": min(covered_s, window_s), "time": now_s, "memory_basis": memory_basis,
            "services": rows, "total": total}
