"""The Prometheus-compatible HTTP API and /federate, served by a real uvicorn server on loopback."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from lichen.observe.http_api import build_query_router
from lichen.observe.promql import Engine
from lichen.observe.rules import RuleManager
from lichen.observe.series import SeriesStore
from lichen.testing import FakeClock

NOW = 1_700_000_600.0


@pytest.fixture(scope="module")
def base_url():
    store = SeriesStore()
    for i in range(0, 41):
        t_ms = int((NOW - 600 + i * 15) * 1000)
        store.append({"__name__": "req_total", "service": "recs", "replica": "recs-0"}, t_ms, float(i * 30))
        store.append({"__name__": "req_total", "service": "recs", "replica": "recs-1"}, t_ms, float(i * 15))
        store.append({"__name__": "up", "service": "gw", "replica": "gw-0"}, t_ms, 0.0)
    engine = Engine(store)
    rules = RuleManager(store, engine)
    rules.load_text("groups: [{name: g, rules: [{alert: Down, expr: 'up == 0', labels: {severity: page}}]}]")
    rules.evaluate_due(NOW)
    app = FastAPI()
    app.include_router(build_query_router(store, engine, rules, clock=FakeClock(start=NOW, wall_offset=0.0)))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_instant_query_get_and_post(base_url: str) -> None:
    r = httpx.get(f"{base_url}/api/v1/query", params={"query": "sum(rate(req_total[5m]))", "time": NOW})
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "success" and body["data"]["resultType"] == "vector"
    [sample] = body["data"]["result"]
    assert sample["metric"] == {} and sample["value"][0] == NOW and float(sample["value"][1]) == pytest.approx(3.0)
    r = httpx.post(f"{base_url}/api/v1/query", data={"query": "1+1", "time": "2023-11-14T22:23:20Z"})
    assert r.json()["data"] == {"resultType": "scalar", "result": [1700000600, "2"]}


def test_range_query_shape_and_step_formats(base_url: str) -> None:
    for step in ("60", "1m"):
        r = httpx.get(
            f"{base_url}/api/v1/query_range",
            params={"query": "rate(req_total[1m])", "start": NOW - 300, "end": NOW, "step": step},
        )
        data = r.json()["data"]
        assert data["resultType"] == "matrix" and len(data["result"]) == 2
        assert [p[0] for p in data["result"][0]["values"]] == [NOW - 300 + 60 * k for k in range(6)]


def test_errors_are_prometheus_shaped(base_url: str) -> None:
    r = httpx.get(f"{base_url}/api/v1/query", params={"query": "sum("})
    assert r.status_code == 400 and r.json()["errorType"] == "bad_data"
    r = httpx.get(f"{base_url}/api/v1/query_range", params={"query": "up", "start": 0, "end": 10})
    assert r.status_code == 400 and "step" in r.json()["error"]
    r = httpx.get(f"{base_url}/api/v1/query", params={"query": "req_total / on(service) sum by (service) (req_total)", "time": NOW})
    assert r.status_code == 422 and r.json()["errorType"] == "execution"


def test_series_labels_and_values(base_url: str) -> None:
    r = httpx.get(f"{base_url}/api/v1/series", params={"match[]": 'req_total{replica=~"recs-.*"}'})
    assert r.json()["data"] == [
        {"__name__": "req_total", "replica": "recs-0", "service": "recs"},
        {"__name__": "req_total", "replica": "recs-1", "service": "recs"},
    ]
    assert "replica" in httpx.get(f"{base_url}/api/v1/labels").json()["data"]
    values = httpx.get(f"{base_url}/api/v1/label/__name__/values").json()["data"]
    assert {"req_total", "up", "ALERTS"} <= set(values)
    scoped = httpx.get(f"{base_url}/api/v1/label/replica/values", params={"match[]": "up"}).json()["data"]
    assert scoped == ["gw-0"]


def test_grafana_probes_and_alerts(base_url: str) -> None:
    info = httpx.get(f"{base_url}/api/v1/status/buildinfo").json()["data"]
    assert info["version"].startswith("2.")
    assert httpx.get(f"{base_url}/api/v1/metadata").json()["status"] == "success"
    alerts = httpx.get(f"{base_url}/api/v1/alerts").json()["data"]["alerts"]
    assert alerts[0]["labels"]["alertname"] == "Down" and alerts[0]["state"] == "firing"
    assert alerts[0]["value"] == "0e+00" and alerts[0]["activeAt"].endswith("Z")  # Prometheus' formats
    groups = httpx.get(f"{base_url}/api/v1/rules").json()["data"]["groups"]
    rules = groups[0]["rules"]
    assert rules[0]["state"] == "firing"
    assert rules[0]["lastEvaluation"].endswith("Z") and groups[0]["lastEvaluation"].endswith("Z")
    assert {"evaluationTime", "limit", "interval"} <= set(groups[0])


def test_federate_text_format(base_url: str) -> None:
    r = httpx.get(f"{base_url}/federate", params=[("match[]", "req_total"), ("match[]", "up")])
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    lines = r.text.splitlines()
    assert "# TYPE req_total untyped" in lines
    assert f'req_total{{replica="recs-0",service="recs"}} 1200 {int(NOW * 1000)}' in lines
    assert httpx.get(f"{base_url}/federate").status_code == 400


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"query": "up", "start": NOW, "end": NOW - 60, "step": "15s"}, "end timestamp must not be before start time"),
        ({"query": "up", "start": NOW - 60, "end": NOW, "step": "0"}, "zero or negative query resolution"),
        ({"query": "up", "start": NOW - 86400 * 7, "end": NOW, "step": "1"}, "exceeded maximum resolution of 11,000 points"),
        ({"query": "up[5m]", "start": NOW - 60, "end": NOW, "step": "15"}, 'invalid expression type "range vector"'),
    ],
)
def test_range_query_parameter_errors_are_bad_data_as_in_prometheus(base_url: str, params: dict, message: str) -> None:
    r = httpx.get(f"{base_url}/api/v1/query_range", params=params)
    assert r.status_code == 400, r.text
    assert r.json()["errorType"] == "bad_data" and message in r.json()["error"]


def test_an_invalid_label_name_is_bad_data(base_url: str) -> None:
    r = httpx.get(f"{base_url}/api/v1/label/1bad/values")
    assert r.status_code == 400 and r.json() == {"status": "error", "errorType": "bad_data", "error": 'invalid label name: "1bad"'}


def test_an_unexpected_failure_is_answered_in_prometheus_shape() -> None:
    class Broken(Engine):
        def instant(self, expr: str, t_s: float) -> dict:
            raise RuntimeError("boom")

    from fastapi.testclient import TestClient

    store = SeriesStore()
    app = FastAPI()
    app.include_router(build_query_router(store, Broken(store), clock=FakeClock(start=NOW, wall_offset=0.0)))
    r = TestClient(app).get("/api/v1/query", params={"query": "up"})
    assert r.status_code == 500 and r.json() == {"status": "error", "errorType": "internal", "error": "RuntimeError: boom"}


def test_metadata_comes_from_the_given_function_and_honours_metric_and_limit() -> None:
    from fastapi.testclient import TestClient

    families = {"b_total": [{"type": "counter", "help": "B.", "unit": ""}], "a": [{"type": "gauge", "help": "A.", "unit": ""}]}
    store = SeriesStore()
    app = FastAPI()
    app.include_router(build_query_router(store, clock=FakeClock(start=NOW, wall_offset=0.0), metadata=lambda: families))
    client = TestClient(app)
    assert client.get("/api/v1/metadata").json() == {"status": "success", "data": {"a": families["a"], "b_total": families["b_total"]}}
    assert client.get("/api/v1/metadata", params={"metric": "b_total"}).json()["data"] == {"b_total": families["b_total"]}
    assert client.get("/api/v1/metadata", params={"limit": "1"}).json()["data"] == {"a": families["a"]}


def test_times_parse_as_rfc3339_or_unix_seconds_and_a_bare_time_is_utc(monkeypatch: pytest.MonkeyPatch) -> None:
    import time as time_module

    from lichen.observe.http_api import parse_time

    monkeypatch.setenv("TZ", "America/New_York")
    time_module.tzset()
    try:
        assert parse_time("2023-11-14T22:13:20Z", 0) == 1_700_000_000
        assert parse_time("2023-11-14T22:13:20", 0) == 1_700_000_000
        assert parse_time("2023-11-14T23:13:20.5+01:00", 0) == 1_700_000_000.5
        assert parse_time("1700000000.25", 0) == 1_700_000_000.25
    finally:
        monkeypatch.delenv("TZ")
        time_module.tzset()
