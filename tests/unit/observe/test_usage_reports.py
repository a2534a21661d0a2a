"""lichen advise's usage report (lichen.observe.usage_reports) on the real series store and PromQL engine: CPU use per
step from the replica counters (resets included), memory from the limited quantity, in-flight requests, the covered
span, and the advice built from the spec's settings."""

from __future__ import annotations

import pytest

from lichen.observe.energy_reports import engine_range_samples
from lichen.observe.promql import Engine
from lichen.observe.series import SeriesStore
from lichen.observe.usage_reports import advice_report, service_usage, step_rates, usage_step_s
from lichen.spec.models import ServiceSpec

END_S = 1_700_000_000.0
SCRAPE_S = 5.0
MIB = 2 ** 20


def test_step_rates_span_at_least_a_step_and_restart_after_a_reset() -> None:
    points = [(0.0, 0.0), (5.0, 1.0), (10.0, 2.0), (15.0, 3.0), (20.0, 0.5), (25.0, 1.5), (30.0, 2.5)]
    assert step_rates(points, 0.0, 10.0) == pytest.approx([0.2, 0.2])  # 0->10, then the reset at 20 anchors anew
    assert step_rates(points, 12.0, 5.0) == pytest.approx([0.2, 0.2])  # only spans inside the window
    assert usage_step_s(86400, 5) == 60 and usage_step_s(60, 0.5) == 2 and usage_step_s(60, 5) == 10


def _store(rows: int) -> SeriesStore:
    store = SeriesStore()
    job = {"job": "controller", "instance": "127.0.0.1:9000"}
    for k in range(rows):
        ms = int((END_S - (rows - 1 - k) * SCRAPE_S) * 1000)
        for replica, cores in (("api-1", 0.2), ("api-2", 0.4)):
            labels = {**job, "service": "api", "revision": "r1", "replica": replica}
            store.append({"__name__": "lichen_replica_cpu_seconds_total", **labels}, ms, cores * SCRAPE_S * k)
            store.append({"__name__": "lichen_replica_memory_working_set_bytes", **labels}, ms, (100 + k % 3) * MIB)
            store.append({"__name__": "lichen_replica_memory_data_bytes", **labels}, ms, 300 * MIB)
        store.append({"__name__": "lichen_gateway_inflight_requests", **job, "service": "api"}, ms, float(k % 4))
    return store


def test_usage_reads_cpu_memory_and_in_flight_over_the_covered_span() -> None:
    series = engine_range_samples(Engine(_store(rows=60)))  # 5 minutes of samples
    usage = service_usage(series, ["api", "idle"], 3600.0, END_S, scrape_interval_s=SCRAPE_S)["api"]
    assert sorted(set(round(c, 6) for c in usage.cpu_cores)) == [0.2, 0.4]
    assert len(usage.cpu_cores) == 2 * 29  # 59 intervals of 5 s per replica, two per 10 s step
    assert max(usage.memory_bytes) == 102 * MIB and min(usage.memory_bytes) == 100 * MIB
    assert usage.resident_bytes == 101 * MIB
    assert sorted(set(usage.inflight)) == [0.0, 1.0, 2.0, 3.0]
    assert usage.window_s == pytest.approx(59 * SCRAPE_S), "rates are per covered second, not per hour asked"
    assert usage.mean_replicas == pytest.approx(2 * 60 * SCRAPE_S / (59 * SCRAPE_S))
    assert usage.cpu_s == pytest.approx((0.2 + 0.4) * 59 * SCRAPE_S)
    data = service_usage(series, ["api"], 3600.0, END_S, scrape_interval_s=SCRAPE_S, memory_basis="data segment")
    assert max(data["api"].memory_bytes) == 300 * MIB and data["api"].resident_bytes == 101 * MIB


def test_the_advice_report_sizes_from_the_spec_and_totals_what_it_knows() -> None:
    series = engine_range_samples(Engine(_store(rows=60)))
    spec = ServiceSpec.model_validate({"entrypoint": "m:A", "replicas": 2, "resources": {"cpu": 2, "memory": "1Gi"}})
    report = advice_report(series, {"api": spec}, 3600.0, END_S, scrape_interval_s=SCRAPE_S,
                           memory_basis="working set")
    [row] = report["services"]
    found = {c["field"]: c["recommended"] for c in row["changes"]}
    assert found == {"resources.cpu": pytest.approx(0.5), "resources.memory": "128Mi"}  # 0.4 x 1.15; 102Mi x 1.15
    assert report["total"]["energy_kwh_per_day"] is None, "no energy counters: no energy figure, not zero"
    only = advice_report(series, {"api": spec, "other": spec}, 3600.0, END_S, scrape_interval_s=SCRAPE_S,
                         memory_basis="working set", only="other")
    assert [r["service"] for r in only["services"]] == ["other"] and only["services"][0]["skipped"]
