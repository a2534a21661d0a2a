"""``lichen energy``'s report: energy, carbon and the SCI per service and revision over a window, from PromQL.

The energy meter (:mod:`lichen.runtime.metering`) counts on the controller's
``/metrics``, which the embedded Prometheus scrapes; this module asks it for
the increases over the window, so the same queries run unchanged on a
cluster's Prometheus:

* ``sum by (service, revision, source) (increase(lichen_energy_joules_total[W]))`` and the ``_low``/``_high``
  counters for the band (likewise ``lichen_carbon_grams``, by the ``intensity`` source that priced it);
* ``lichen_embodied_carbon_grams_total`` for the SCI's M;
* ``sum by (service, revision) (increase(lichen_gateway_requests_total[W]))`` for R;
* the node's idle and unattributed energy, apart;
* the meter's own CPU time over the controller's (``process_cpu_seconds_total{job="controller"}``).

Every figure is ``{value, low, high}`` with its sources; per request and per
1,000 requests (the SCI, ``(E·I + M) / R``) only where R > 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from lichen.spec.quantities import format_duration

Query = Callable[[str, float], list[tuple[dict[str, str], float]]]
BANDS = ("", "_low", "_high")


def _by(query: Query, metric: str, labels: tuple[str, ...], window: str, now_s: float,
        matcher: str = "") -> dict[tuple[str, ...], list[float]]:
    """``{label values: [value, low, high]}`` of the increases of a metric and its two band counters."""
    result: dict[tuple[str, ...], list[float]] = {}
    for i, suffix in enumerate(BANDS):
        expr = f"sum by ({', '.join(labels)}) (increase({metric}{suffix}_total{matcher}[{window}]))"
        for sample_labels, value in query(expr, now_s):
            if math.isnan(value):
                continue
            key = tuple(sample_labels.get(label, "") for label in labels)
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


def _scalar(query: Query, expr: str, now_s: float) -> float | None:
    samples = query(expr, now_s)
    return None if not samples or math.isnan(samples[0][1]) else samples[0][1]


def energy_report(query: Query, window_s: float, now_s: float) -> dict[str, Any]:
    """The report of the module docs at ``now_s`` over ``window_s``, as plain data."""
    if window_s < 1:
        raise ValueError(f"the window must be at least 1 s, got {window_s:g} s")
    window = f"{int(window_s)}s"
    energy = _by(query, "lichen_energy_joules", ("service", "revision", "source"), window, now_s)
    carbon = _by(query, "lichen_carbon_grams", ("service", "revision", "intensity"), window, now_s)
    embodied = {k: v for k, v in (
        (tuple(labels.get(x, "") for x in ("service", "revision")), value) for labels, value in query(
            f"sum by (service, revision) (increase(lichen_embodied_carbon_grams_total[{window}]))", now_s))
        if not math.isnan(v)}
    requests = {tuple(labels.get(x, "") for x in ("service", "revision")): value for labels, value in query(
        f'sum by (service, revision) (increase(lichen_gateway_requests_total{{revision!=""}}[{window}]))', now_s)
        if not math.isnan(value)}
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
        parts = _by(query, metric, ("source",), window, now_s)
        total = None
        for (source,), triple in parts.items():
            total = _plus(total, _figure(triple, [source]))
        node[name] = total
    cost_s = _scalar(query, f"sum(increase(lichen_energy_accounting_cpu_seconds_total[{window}]))", now_s)
    controller_s = _scalar(query, f'sum(increase(process_cpu_seconds_total{{job="controller"}}[{window}]))', now_s)
    return {
        "window": format_duration(window_s), "window_s": window_s, "time": now_s,
        "services": [services[name] for name in sorted(services)], "revisions": revisions, "node": node,
        "accounting_cost": {"cpu_s": cost_s, "controller_cpu_s": controller_s,
                            "share_of_controller": cost_s / controller_s if cost_s is not None and controller_s
                            else None},
    }
