"""lichen energy's report (lichen.observe.energy_reports) on the real series store and PromQL engine, fed with the
energy meter's counters: per-revision energy per request and SCI match the arithmetic, a costlier revision shows
it, services add up their revisions, the node's idle energy and the meter's own cost are reported apart, and a
revision without requests has energy but no per-request figures."""

from __future__ import annotations

import pytest

from lichen.observe.energy_reports import counter_increase, energy_report, engine_range_samples
from lichen.observe.promql import Engine
from lichen.observe.series import SeriesStore

END_S = 1_700_000_000.0
STEP_S = 15.0
WINDOW_S = 3600.0
HISTORY_S = 2 * 3600.0
LOW, HIGH = 0.8, 1.25
INTENSITY = 400 / 3.6e6  # grams per joule

# (metric, labels, rate per second): counters that grow linearly, so increase over the window = rate x window
ENERGY = [  # r1: 2.5 J/s for 10 req/s (0.25 J each); r2: 1.625 J/s for 5 req/s (0.325 J each, 30 % more)
    ({"service": "api", "revision": "r1", "replica": "api-r1-0", "source": "model"}, 1.2),
    ({"service": "api", "revision": "r1", "replica": "api-r1-1", "source": "model"}, 0.8),
    ({"service": "api", "revision": "r1", "replica": "api-r1-0", "source": "nvml"}, 0.5),
    ({"service": "api", "revision": "r2", "replica": "api-r2-0", "source": "model"}, 1.625),
    ({"service": "worker", "revision": "w1", "replica": "worker-w1-0", "source": "model"}, 0.4),
]
EMBODIED = {("api", "r1", "api-r1-0"): 0.0012, ("api", "r1", "api-r1-1"): 0.0008, ("api", "r2", "api-r2-0"): 0.001,
            ("worker", "w1", "worker-w1-0"): 0.0005}  # g/s per replica
REQUESTS = [  # per second; the worker's counter exists but stays flat
    ({"route": "/a", "service": "api", "revision": "r1", "status": "200"}, 9.0),
    ({"route": "/a", "service": "api", "revision": "r1", "status": "500"}, 1.0),
    ({"route": "/a", "service": "api", "revision": "r2", "status": "200"}, 5.0),
    ({"route": "/w", "service": "worker", "revision": "w1", "status": "200"}, 0.0),
]
IDLE = 3.0  # J/s, source model
UNATTRIBUTED = 0.7
ACCOUNTING, CONTROLLER = 0.001, 0.05  # CPU s/s


def counters() -> list[tuple[str, dict[str, str], float]]:
    out = []
    for labels, rate in ENERGY:
        for suffix, factor in (("", 1.0), ("_low", LOW), ("_high", HIGH)):
            out.append((f"lichen_energy_joules{suffix}_total", labels, rate * factor))
            out.append((f"lichen_carbon_grams{suffix}_total", {**labels, "intensity": "electricitymaps:DE"},
                        rate * factor * INTENSITY))
    out += [("lichen_embodied_carbon_grams_total", dict(zip(("service", "revision", "replica"), key, strict=True)),
             rate) for key, rate in EMBODIED.items()]
    out += [("lichen_gateway_requests_total", labels, rate) for labels, rate in REQUESTS]
    for suffix, factor in (("", 1.0), ("_low", 0.7), ("_high", 1.0)):
        out.append((f"lichen_energy_idle_joules{suffix}_total", {"source": "model"}, IDLE * factor))
        out.append((f"lichen_energy_unattributed_joules{suffix}_total", {"source": "model"}, UNATTRIBUTED * factor))
    out += [("lichen_energy_accounting_cpu_seconds_total", {}, ACCOUNTING),
            ("process_cpu_seconds_total", {}, CONTROLLER)]
    return out


@pytest.fixture(scope="module")
def report() -> dict:
    store = SeriesStore()
    steps = int(HISTORY_S / STEP_S)
    for k in range(steps + 1):
        ms = int((END_S - (steps - k) * STEP_S - 1) * 1000)
        for name, labels, rate in counters():
            job = {"job": "controller", "instance": "127.0.0.1:9000"}
            store.append({"__name__": name, **job, **labels}, ms, 1000.0 + rate * STEP_S * k)
        # a replica's own process CPU: not the controller's, never in the accounting share
        store.append({"__name__": "process_cpu_seconds_total", "job": "replica", "instance": "x"}, ms, 5.0 * k)
    return energy_report(engine_range_samples(Engine(store)), WINDOW_S, END_S)


def _revision(report: dict, service: str, revision: str) -> dict:
    [row] = [r for r in report["revisions"] if (r["service"], r["revision"]) == (service, revision)]
    return row


def _energy_rate(service: str, revision: str) -> float:
    return sum(rate for labels, rate in ENERGY if (labels["service"], labels["revision"]) == (service, revision))


def _embodied_rate(service: str, revision: str) -> float:
    return sum(rate for key, rate in EMBODIED.items() if key[:2] == (service, revision))


def _request_rate(service: str, revision: str) -> float:
    return sum(rate for labels, rate in REQUESTS if (labels["service"], labels["revision"]) == (service, revision))


def test_energy_per_request_per_revision_and_the_costlier_revision_shows_it(report: dict) -> None:
    assert [(r["service"], r["revision"]) for r in report["revisions"]] == [("api", "r1"), ("api", "r2"),
                                                                           ("worker", "w1")]
    r1, r2 = _revision(report, "api", "r1"), _revision(report, "api", "r2")
    assert r1["requests"] == pytest.approx(10.0 * WINDOW_S, rel=1e-6)
    assert r1["energy_j"]["value"] == pytest.approx(2.5 * WINDOW_S, rel=1e-6)
    assert r1["energy_j"]["sources"] == ["model", "nvml"] and r2["energy_j"]["sources"] == ["model"]
    assert r1["energy_per_request_j"]["value"] == pytest.approx(0.25, rel=1e-6)
    assert r2["energy_per_request_j"]["value"] == pytest.approx(0.325, rel=1e-6)
    assert r2["energy_per_request_j"]["value"] / r1["energy_per_request_j"]["value"] == pytest.approx(1.3, rel=1e-6)
    assert r2["carbon_per_request_g"]["value"] / r1["carbon_per_request_g"]["value"] == pytest.approx(1.3, rel=1e-6)
    for row in (r1, r2):
        for field in ("energy_j", "carbon_g", "energy_per_request_j", "carbon_per_request_g",
                      "sci_g_per_1000_requests"):
            figure = row[field]
            assert figure["low"] <= figure["value"] <= figure["high"]
        assert row["energy_per_request_j"]["low"] == pytest.approx(row["energy_per_request_j"]["value"] * LOW)
        assert row["energy_per_request_j"]["high"] == pytest.approx(row["energy_per_request_j"]["value"] * HIGH)


def test_sci_is_operational_plus_embodied_carbon_per_1000_requests(report: dict) -> None:
    for revision in ("r1", "r2"):
        row = _revision(report, "api", revision)
        carbon = _energy_rate("api", revision) * INTENSITY * WINDOW_S
        embodied = _embodied_rate("api", revision) * WINDOW_S
        assert row["carbon_g"]["value"] == pytest.approx(carbon, rel=1e-6)
        assert row["carbon_g"]["sources"] == ["electricitymaps:DE"]  # carbon names the intensity that priced it
        assert row["embodied_g"] == pytest.approx(embodied, rel=1e-6)
        requests = _request_rate("api", revision) * WINDOW_S
        sci = row["sci_g_per_1000_requests"]
        assert sci["value"] == pytest.approx((carbon + embodied) / requests * 1000, rel=1e-6)
        assert sci["low"] == pytest.approx((carbon * LOW + embodied) / requests * 1000, rel=1e-6)
        assert sci["high"] == pytest.approx((carbon * HIGH + embodied) / requests * 1000, rel=1e-6)


def test_services_add_up_their_revisions(report: dict) -> None:
    [api, worker] = report["services"]
    assert api["service"] == "api" and api["revisions"] == ["r1", "r2"] and worker["revisions"] == ["w1"]
    r1, r2 = _revision(report, "api", "r1"), _revision(report, "api", "r2")
    assert api["requests"] == pytest.approx(r1["requests"] + r2["requests"])
    for field in ("energy_j", "carbon_g"):
        for key in ("value", "low", "high"):
            assert api[field][key] == pytest.approx(r1[field][key] + r2[field][key])
    assert api["energy_j"]["sources"] == ["model", "nvml"]
    assert api["embodied_g"] == pytest.approx(r1["embodied_g"] + r2["embodied_g"])
    assert api["energy_per_request_j"]["value"] == pytest.approx((2.5 + 1.625) / 15.0, rel=1e-6)
    assert api["sci_g_per_1000_requests"]["value"] == pytest.approx(
        (api["carbon_g"]["value"] + api["embodied_g"]) / api["requests"] * 1000)


def test_a_revision_without_requests_has_energy_but_no_per_request_figures(report: dict) -> None:
    w1 = _revision(report, "worker", "w1")
    assert w1["requests"] == 0.0
    assert w1["energy_j"]["value"] == pytest.approx(0.4 * WINDOW_S, rel=1e-6)
    assert w1["embodied_g"] == pytest.approx(0.0005 * WINDOW_S, rel=1e-6)
    assert w1["energy_per_request_j"] is None and w1["carbon_per_request_g"] is None
    assert w1["sci_g_per_1000_requests"] is None
    [worker] = [s for s in report["services"] if s["service"] == "worker"]
    assert worker["energy_per_request_j"] is None and worker["sci_g_per_1000_requests"] is None


def test_node_idle_and_unattributed_energy_and_the_accounting_share(report: dict) -> None:
    idle, unattributed = report["node"]["idle_j"], report["node"]["unattributed_j"]
    assert idle["value"] == pytest.approx(IDLE * WINDOW_S, rel=1e-6) and idle["sources"] == ["model"]
    assert idle["low"] == pytest.approx(0.7 * IDLE * WINDOW_S, rel=1e-6) and idle["high"] == idle["value"]
    assert unattributed["value"] == pytest.approx(UNATTRIBUTED * WINDOW_S, rel=1e-6)
    cost = report["accounting_cost"]
    assert cost["cpu_s"] == pytest.approx(ACCOUNTING * WINDOW_S, rel=1e-6)
    assert cost["controller_cpu_s"] == pytest.approx(CONTROLLER * WINDOW_S, rel=1e-6)
    assert cost["share_of_controller"] == pytest.approx(ACCOUNTING / CONTROLLER, rel=1e-6)
    assert report["window"] == "1h" and report["window_s"] == WINDOW_S and report["time"] == END_S


def test_an_empty_store_reports_nothing_without_dividing_by_zero() -> None:
    report = energy_report(engine_range_samples(Engine(SeriesStore())), WINDOW_S, END_S)
    assert report["services"] == [] and report["revisions"] == []
    assert report["node"] == {"idle_j": None, "unattributed_j": None}
    assert report["accounting_cost"] == {"cpu_s": None, "controller_cpu_s": None, "share_of_controller": None}


def test_counter_increase_counts_a_series_born_in_the_window_whole_and_survives_a_reset() -> None:
    assert counter_increase([(90.0, 10.0), (100.0, 12.0), (110.0, 20.0)], start_s=100.0) == 8.0  # from the start's
    assert counter_increase([(105.0, 297.0), (110.0, 300.0)], start_s=100.0) == 300.0  # born inside: from 0
    assert counter_increase([(90.0, 50.0), (105.0, 60.0), (110.0, 4.0), (120.0, 9.0)], start_s=100.0) == 10 + 4 + 5
    assert counter_increase([(90.0, 50.0)], start_s=100.0) == 0.0
    assert counter_increase([], start_s=100.0) == 0.0


def test_a_burst_to_a_revision_whose_counter_appears_mid_window_is_counted_in_full() -> None:
    """What PromQL's increase() gets wrong on make demo's app: 300 requests read as 3."""
    store = SeriesStore()
    labels = {"__name__": "lichen_gateway_requests_total", "job": "gateway", "route": "/v1/items",
              "service": "similar", "revision": "r1", "status": "200"}
    energy = {"__name__": "lichen_energy_joules_total", "job": "controller", "service": "similar",
              "revision": "r1", "replica": "similar-0", "source": "model"}
    for t_s, served in ((END_S - 20, 297.0), (END_S - 10, 300.0)):
        store.append(labels, int(t_s * 1000), served)
    for t_s, joules in ((END_S - 100, 1.0), (END_S - 20, 2.0), (END_S - 10, 3.0)):
        for suffix in ("", "_low", "_high"):
            store.append({**energy, "__name__": f"lichen_energy_joules{suffix}_total"}, int(t_s * 1000), joules)
    engine = Engine(store)
    assert engine.instant_samples("sum(increase(lichen_gateway_requests_total[60s]))", END_S)[0][1] < 10
    report = energy_report(engine_range_samples(engine), 60.0, END_S)
    [row] = report["revisions"]
    assert row["requests"] == 300.0 and row["energy_j"]["value"] == 2.0  # from 1, the last sample before the window
