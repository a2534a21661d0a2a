"""lichen slo's report on the real series store and PromQL engine, fed with synthetic counters: the
attainment, budget left and burn rates match the arithmetic, a service without requests reads
"no traffic", and the dashboard serves the same report."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from lichen.errors import ConfigError
from lichen.observe.dashboard import build_dashboard_router
from lichen.observe.promql import Engine
from lichen.observe.series import SeriesStore
from lichen.observe.slo_reports import slo_exprs, slo_report, window_of
from lichen.spec.models import SloSpec
from lichen.testing.clocks import FakeClock

END_S = 1_700_000_000.0
STEP_S = 15.0
RPS = 10.0


def fill(store: SeriesStore, error_share: float, slow_share: float, history_s: float = 3600.0) -> None:
    base = {"service": "api", "replica": "api-aaaaa-0", "job": "replica"}
    steps = int(history_s / STEP_S)
    for k in range(steps + 1):
        ms = int((END_S - (steps - k) * STEP_S - 1) * 1000)
        total = RPS * STEP_S * k
        store.append({"__name__": "lichen_requests_total", **base, "status": "200"}, ms, total * (1 - error_share))
        store.append({"__name__": "lichen_requests_total", **base, "status": "500"}, ms, total * error_share)
        store.append({"__name__": "lichen_request_duration_seconds_count", **base}, ms, total)
        store.append({"__name__": "lichen_request_duration_seconds_bucket", **base, "le": "0.3"}, ms,
                     total * (1 - slow_share))


def _by_slo(report: dict) -> dict:
    return {(s["service"], s["slo"]): s for s in report["slos"]}


def test_attainment_budget_and_burn_rates_from_the_alert_expressions() -> None:
    store = SeriesStore()
    fill(store, error_share=0.0005, slow_share=0.02)
    slos = {"api": SloSpec(availability=0.999, latency_ms=300, latency_target=0.99), "idle": SloSpec()}
    report = slo_report(Engine(store).instant_samples, slos, 3600.0, END_S)
    rows = _by_slo(report)
    availability, latency = rows[("api", "availability")], rows[("api", "latency")]
    assert report["window"] == "1h"
    assert availability["attainment"] == pytest.approx(0.9995, abs=1e-6)
    assert availability["budget_left"] == pytest.approx(0.5, abs=1e-3)
    assert availability["burn_rates"]["5m"] == pytest.approx(0.5, abs=1e-3)
    assert availability["state"] == "ok" and availability["requests"] == pytest.approx(RPS * 3600, rel=0.02)
    # 2 % slow against a 1 % budget: twice the sustainable rate, the budget of the window overspent
    assert latency["attainment"] == pytest.approx(0.98, abs=1e-6)
    assert latency["burn_rates"]["1h"] == pytest.approx(2.0, abs=1e-3)
    assert latency["budget_left"] == pytest.approx(-1.0, abs=1e-3) and latency["state"] == "exhausted"
    for slo in ("availability", "latency"):
        idle = rows[("idle", slo)]
        assert idle["state"] == "no traffic" and idle["attainment"] is None and idle["budget_left"] == 1.0


def test_a_service_that_never_failed_reads_full_attainment_not_no_data() -> None:
    store_without_5xx = SeriesStore()  # only a 200 series, as a replica that never answered a 5xx exposes
    labels = {"__name__": "lichen_requests_total", "service": "api", "status": "200"}
    for k in range(241):
        store_without_5xx.append(labels, int((END_S - (240 - k) * STEP_S - 1) * 1000), RPS * STEP_S * k)
    rows = _by_slo(slo_report(Engine(store_without_5xx).instant_samples, {"api": SloSpec()}, 3600.0, END_S))
    assert rows[("api", "availability")]["attainment"] == 1.0
    assert rows[("api", "availability")]["burn_rates"]["1h"] == 0.0


def test_burning_while_a_burn_rate_alert_condition_holds() -> None:
    store = SeriesStore()
    fill(store, error_share=0.02, slow_share=0.0)  # 20x the 0.1 % budget over every window
    rows = _by_slo(slo_report(Engine(store).instant_samples, {"api": SloSpec(availability=0.999)}, 3600.0, END_S))
    assert rows[("api", "availability")]["state"] == "exhausted"
    assert "1h/5m" in rows[("api", "availability")]["burning"] and "6h/30m" in rows[("api", "availability")]["burning"]


def test_the_report_reads_the_alerts_own_ratio_expressions() -> None:
    from lichen.observe.default_rules import error_ratio, slow_ratio

    exprs = slo_exprs("api", SloSpec(latency_ms=250), "3600s")
    assert error_ratio('service="api"', "1h") in exprs["availability"]["ratios"]["1h"]
    assert exprs["latency"]["ratios"]["5m"] == slow_ratio('service="api"', "0.25", "5m")


def test_window_defaults_to_the_retention_up_to_30_days() -> None:
    assert window_of(None, 6 * 3600.0) == 6 * 3600.0
    assert window_of(None, 90 * 86400.0) == 30 * 86400.0
    assert window_of("1h", 6 * 3600.0) == 3600.0
    with pytest.raises(ConfigError, match="longer than observability.retention"):
        window_of("7d", 6 * 3600.0)
    with pytest.raises(ConfigError, match="--window"):
        window_of("soon", 6 * 3600.0)


def test_the_dashboard_serves_the_same_report() -> None:
    store = SeriesStore()
    fill(store, error_share=0.0005, slow_share=0.0)
    engine = Engine(store)
    slos = {"api": SloSpec(availability=0.999)}
    app = FastAPI()
    app.include_router(build_dashboard_router(engine=engine, token="t", clock=FakeClock(start=0.0, wall_offset=END_S),
                                              slos=lambda: (slos, 3600.0)))
    client = TestClient(app)
    assert client.get("/dashboard/api/slo").status_code == 401
    served = client.get("/dashboard/api/slo", headers={"Authorization": "Bearer t"}).json()
    assert served == slo_report(engine.instant_samples, slos, 3600.0, END_S)
