"""``lichen energy``'s report: energy, carbon and the SCI per service and revision over a window, from PromQL.

The energy meter (:mod:`lichen.runtime.metering`) counts on the controller's
``/metrics``, which the embedded Prometheus scrapes; this module reads the
counters' samples over the window from it and sums their **exact increases**
(:func:`counter_increase`), per label set:

* ``lichen_energy_joules_total`` by (service, revision, source) and the ``_low``/``_high`` counters for the
  band (likewise ``lichen_carbon_grams``, by the ``intensity`` source that priced it);
* ``lichen_embodied_carbon_grams_total`` for the SCI's M;
* ``lichen_gateway_requests_total`` by (service, revision) for R;
* the node's idle and unattributed energy, apart;
* the meter's own CPU time over the controller's (``process_cpu_seconds_total{job="controller"}``).

Not PromQL's ``increase()``: it extrapolates to the window's edges and never
counts a series' first sample, so a burst of 300 requests to a revision whose
counter appeared mid-window reads as 3 (seen on ``make demo``'s app), and a
steady one can read above what was served. A report of what was spent wants
the counted figure; on a cluster, ``increase()`` over a long window is the
close equivalent.

Every figure is ``{value, low, high}`` with its sources; per request and per
1,000 requests (the SCI, ``(E·I + M) / R``) only where R > 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from lichen.spec.quantities import format_duration

Points = list[tuple[float, float]]
RangeSamples = Callable[[str, float], list[tuple[dict[str, str], Points]]]
"""``(selector with a range, time) -> [(labels, [(t_s, value), ...])]``: raw samples, as ``x[5m]`` returns"""
BANDS = ("", "_low", "_high")
LOOKBACK_S = 300.0
"""how far before the window a series' last sample may lie to be its starting value (Prometheus' staleness)"""


def counter_increase(points: Points, start_s: float) -> float:
    """What a counter counted after ``start_s``: from its last sample at or before the start (0 for a series
    born inside the window), each rise, and after a reset (a drop) the new value in full."""
    previous = 0.0
    total = 0.0
    for t_s, value in points:
        if t_s <= start_s:
            previous = value
            continue
        total += value - previous if value >= previous else value
        previous = value
    return total


def engine_range_samples(engine: Any) -> RangeSamples:
    """:data:`RangeSamples` over a :class:`lichen.observe.promql.Engine` (its instant query of ``x[W]``)."""
    def samples(expr: str, t_s: float) -> list[tuple[dict[str, str], Points]]:
        result = engine.instant(expr, t_s).get("result") or []
        return [(item["metric"], [(float(t), float(v)) for t, v in item.get("values", [])]) for item in result]
    return samples


def _increases(series: RangeSamples, selector: str, labels: tuple[str, ...], window_s: float,
               now_s: float) -> dict[tuple[str, ...], float]:
    start_s = now_s - window_s
    found: dict[tuple[str, ...], float] = {}
    for sample_labels, points in series(f"{selector}[{int(window_s + LOOKBACK_S)}s]", now_s):
        if any(math.isnan(v) for _, v in points):
            points = [(t, v) for t, v in points if not math.isnan(v)]
        key = tuple(sample_labels.get(label, "") for label in labels)
        found[key] = found.get(key, 0.0) + counter_increase(points, start_s)
    return found


def _by(series: RangeSamples, metric: str, labels: tuple[str, ...], window_s: float,
        now_s: float) -> dict[tuple[str, ...], list[float]]:
    """``{label values: [value, low, high]}`` of the increases of a metric and its two band counters."""
    result: dict[tuple[str, ...], list[float]] = {}
    for i, suffix in enumerate(BANDS):
        for key, value in _increases(series, f"{metric}{suffix}_total", labels, window_s, now_s).items():
            result.setdefault(key, [0.0, 0.0, 0.0])[i] += value
    return result


def _figure(triple: list[float], sources: list[str]) -> dict[str, Any]:
    value, low, high = triple
    return {"value": value, "low": min(low, value), "high": max(high, value), "sources": sorted(set(sources))}


def _per(figure: dict[str, Any] | None, count: float, scale: float = 1.0) -> dict[str, Any] | None:
    if figure is None or count <= 0:
        return None
    return {**figure, **{k: figure[k] * scale / count for k in ("value", "low", "high")}}


def _plus(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any] | None:
    if a is None or b is None:
        return a or b
    return {"value": a["value"] + b["value"], "low": a["low"] + b["low"], "high": a["high"] + b["high"],
            "sources": sorted(set(a["sources"]) | set(b["sources"]))}


def _total(series: RangeSamples, selector: str, window_s: float, now_s: float) -> float | None:
    found = _increases(series, selector, (), window_s, now_s)
    return found.get(()) if found else None


def energy_report(series: RangeSamples, window_s: float, now_s: float) -> dict[str, Any]:
    """The report of the module docs at ``now_s`` over ``window_s``, as plain data."""
    if window_s < 1:
        raise ValueError(f"the window must be at least 1 s, got {window_s:g} s")
    energy = _by(series, "lichen_energy_joules", ("service", "revision", "source"), window_s, now_s)
    carbon = _by(series, "lichen_carbon_grams", ("service", "revision", "intensity"), window_s, now_s)
    pair = ("service", "revision")
    embodied = _increases(series, "lichen_embodied_carbon_grams_total", pair, window_s, now_s)
    requests = _increases(series, 'lichen_gateway_requests_total{revision!=""}', pair, window_s, now_s)
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for table, field in ((energy, "energy_j"), (carbon, "carbon_g")):  # carbon's sources: the intensities
        for (service, revision, source), triple in table.items():
            row = rows.setdefault((service, revision), {"service": service, "revision": revision})
            row[field] = _plus(row.get(field), _figure(triple, [source]))
    for key, grams in embodied.items():
        if key in rows:
            rows[key]["embodied_g"] = grams
    revisions = []
    for key in sorted(rows):
        row = rows[key]
        served = requests.get(key, 0.0)
        embodied_g = row.get("embodied_g", 0.0)
        total_g = _plus(row.get("carbon_g"), {"value": embodied_g, "low": embodied_g, "high": embodied_g,
                                              "sources": []})
        row.update({"requests": served, "energy_per_request_j": _per(row.get("energy_j"), served),
                    "carbon_per_request_g": _per(row.get("carbon_g"), served),
                    "sci_g_per_1000_requests": _per(total_g, served, 1000.0)})
        row.setdefault("embodied_g", 0.0)
        revisions.append(row)
    services: dict[str, dict[str, Any]] = {}
    for row in revisions:
        entry = services.setdefault(row["service"], {"service": row["service"], "requests": 0.0, "embodied_g": 0.0,
                                                     "revisions": []})
        entry["revisions"].append(row["revision"])
        entry["requests"] += row["requests"]
        entry["embodied_g"] += row["embodied_g"]
        for field in ("energy_j", "carbon_g"):
            entry[field] = _plus(entry.get(field), row.get(field))
    for entry in services.values():
        total_g = _plus(entry.get("carbon_g"), {"value": entry["embodied_g"], "low": entry["embodied_g"],
                                                "high": entry["embodied_g"], "sources": []})
        entry.update({"energy_per_request_j": _per(entry.get("energy_j"), entry["requests"]),
                      "sci_g_per_1000_requests": _per(total_g, entry["requests"], 1000.0)})
    node = {}
    for name, metric in (("idle_j", "lichen_energy_idle_joules"), ("unattributed_j",
                                                                    "lichen_energy_unattributed_joules")):
        parts = _by(series, metric, ("source",), window_s, now_s)
        total = None
        for (source,), triple in parts.items():
            total = _plus(total, _figure(triple, [source]))
        node[name] = total
    cost_s = _total(series, "lichen_energy_accounting_cpu_seconds_total", window_s, now_s)
    controller_s = _total(series, 'process_cpu_seconds_total{job="controller"}', window_s, now_s)
    return {
        "window": format_duration(window_s), "window_s": window_s, "time": now_s,
        "services": [services[name] for name in sorted(services)], "revisions": revisions, "node": node,
        "accounting_cost": {"cpu_s": cost_s, "controller_cpu_s": controller_s,
                            "share_of_controller": cost_s / controller_s if cost_s is not None and controller_s
                            else None},
    }
