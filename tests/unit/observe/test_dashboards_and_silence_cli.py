"""Grafana export, the dashboard's queries, and the silence/dashboard CLI verbs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import promql_parser
import pytest
from typer.testing import CliRunner

from lichen.cli.main import app
from lichen.observe.dashboard import PANELS
from lichen.observe.grafana import grafana_dashboard, with_service_filter
from lichen.observe.silences import SilenceStore

runner = CliRunner()
SPEC = "app: shop\nservices:\n  api:\n    entrypoint: shop.api:Api\n"


def test_grafana_export_uses_the_dashboard_queries() -> None:
    doc = grafana_dashboard("shop")
    assert doc["title"] == "Lichen · shop" and doc["__inputs"][0]["pluginId"] == "prometheus"
    series = [p for p in doc["panels"] if p["type"] == "timeseries"]
    assert [p["title"] for p in series] == [p.title for p in PANELS]
    for grafana_panel, panel in zip(series, PANELS, strict=True):
        assert [t["expr"] for t in grafana_panel["targets"]] == [with_service_filter(q.expr) for q in panel.queries]
        assert grafana_panel["fieldConfig"]["defaults"]["unit"] == panel.unit
    for panel in doc["panels"]:
        for target in panel["targets"]:
            promql_parser.parse(target["expr"].replace("$service", ".*"))  # valid PromQL once templated
            assert '{service=~"$service"' in target["expr"]


def test_service_filter_is_added_to_every_lichen_selector() -> None:
    assert with_service_filter("rate(lichen_requests_total[1m])") == 'rate(lichen_requests_total{service=~"$service"}[1m])'
    assert (
        with_service_filter('lichen_requests_total{status=~"5.."}')
        == 'lichen_requests_total{service=~"$service",status=~"5.."}'
    )


def test_dashboard_queries_parse() -> None:
    for panel in PANELS:
        for query in panel.queries:
            promql_parser.parse(query.expr)


def test_dashboards_export_writes_json(tmp_path: Path) -> None:
    (tmp_path / "lichen.yaml").write_text(SPEC)
    out = tmp_path / "grafana.json"
    result = runner.invoke(app, ["dashboards", "export", "--out", str(out), "-C", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["uid"] == "lichen-shop"


def test_silence_verbs_round_trip_through_the_state_db(tmp_path: Path) -> None:
    (tmp_path / "lichen.yaml").write_text(SPEC)
    result = runner.invoke(
        app, ["silence", "add", "alertname=LichenHighErrorRatio", "service=~api|web", "-d", "2h", "-c", "deploy",
              "-C", str(tmp_path), "--json"],
    )
    assert result.exit_code == 0, result.output
    added = json.loads(result.output)
    assert added["status"]["state"] == "active" and added["comment"] == "deploy"
    assert added["endsAt"] - added["startsAt"] == 7200
    # the notifier reads the same file the spec's state.url names
    store = SilenceStore(tmp_path / ".lichen" / "state.db")
    (silence,) = store.current(time.time())
    assert silence.mutes({"alertname": "LichenHighErrorRatio", "service": "web"}, time.time())
    listed = json.loads(runner.invoke(app, ["silence", "list", "-C", str(tmp_path), "--json"]).output)
    assert [s["id"] for s in listed["silences"]] == [added["id"]]
    result = runner.invoke(app, ["silence", "expire", added["id"][:8], "-C", str(tmp_path), "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["status"]["state"] == "expired"
    assert json.loads(runner.invoke(app, ["silence", "list", "-C", str(tmp_path), "--json"]).output)["silences"] == []
    assert len(json.loads(runner.invoke(app, ["silence", "list", "--all", "-C", str(tmp_path), "--json"]).output)["silences"]) == 1


def test_silence_add_rejects_bad_matchers(tmp_path: Path) -> None:
    result = runner.invoke(app, ["silence", "add", "service", "-C", str(tmp_path)])
    assert result.exit_code != 0


def test_dashboard_prints_the_running_controllers_url(tmp_path: Path) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from lichen.errors import ControlPlaneError

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200 if self.path == "/dashboard/" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    state = tmp_path / ".lichen"
    state.mkdir()
    (state / "controller.json").write_text(json.dumps({"url": base, "pid": 1}))
    (state / "token").write_text("tok\n")
    try:
        result = runner.invoke(app, ["dashboard", "-C", str(tmp_path), "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output) == {"url": f"{base}/dashboard/#token=tok"}
    finally:
        server.shutdown()
        server.server_close()
    result = runner.invoke(app, ["dashboard", "-C", str(tmp_path), "--json"])  # the controller is gone
    assert isinstance(result.exception, ControlPlaneError) and "did not answer" in str(result.exception)


def test_overview_reports_headroom_and_risk_from_real_rules() -> None:
    from lichen.observe.dashboard import HeadroomEvaluator, build_overview
    from lichen.observe.promql import Engine
    from lichen.observe.rules import RuleManager
    from lichen.observe.series import SeriesStore

    store = SeriesStore()
    engine = Engine(store)
    rules = RuleManager(store, engine)
    rules.load_text(
        "groups:\n- name: g\n  rules:\n"
        "  - alert: Busy\n    expr: inflight / limit > 0.8\n    labels: {service: api}\n"
        "  - alert: Slow\n    expr: latency_s > 0.5\n"
        "  - alert: Down\n    expr: up == 0\n"
    )
    t0 = 1_700_000_000.0
    for service, inflight, latency in (("api", 40.0, 0.1), ("web", 8.0, 0.45)):
        base = {"service": service, "replica": f"{service}-1"}
        store.append({"__name__": "inflight", **base}, int(t0 * 1000), inflight)
        store.append({"__name__": "limit", **base}, int(t0 * 1000), 64.0)
        store.append({"__name__": "latency_s", **base}, int(t0 * 1000), latency)
        store.append({"__name__": "up", **base}, int(t0 * 1000), 1.0)
    rules.evaluate_due(t0)
    overview = build_overview(
        app_name="shop", engine=engine, rules=rules, headroom=HeadroomEvaluator(engine, rules), now_s=t0
    )
    rows = {(r["alert"], r["service"]): r["headroom"] for r in overview["headroom"]}
    assert set(rows) == {(alert, service) for alert in ("Busy", "Slow", "Down") for service in ("api", "web")}
    assert rows[("Busy", "api")] == pytest.approx(1 - (40 / 64) / 0.8)
    assert rows[("Slow", "web")] == pytest.approx(1 - 0.45 / 0.5)
    assert rows[("Down", "api")] == 1.0  # `up == 0` on up in {0, 1} is `up <= 0`: up = 1 is fully healthy
    # risk: 0.9 x the utilisation of the nearest threshold while no alert is pending or firing
    assert overview["risk"] == pytest.approx({"api": 0.9 * (40 / 64) / 0.8, "web": 0.9 * 0.9})
    assert [r["alert"] for r in overview["headroom"]][0] == "Slow"  # nearest to firing first
    assert [(s["name"], s["ready"]) for s in overview["services"]] == [("api", 1), ("web", 1)]
    assert overview["alerts"] == []


def test_dashboard_page_is_self_contained() -> None:
    import re

    from lichen.observe.dashboard import STATIC_DIR, STATIC_FILES

    for name in STATIC_FILES:
        text = (STATIC_DIR / name).read_text()
        urls = set(re.findall(r"https?://[^\s\"'<>)]+", text)) - {"http://www.w3.org/2000/svg"}
        assert not urls, f"{name} loads from the network: {urls}"
        assert "@import" not in text


def test_overview_shows_each_services_rollout() -> None:
    from lichen.observe.dashboard import build_overview

    status = {"services": {
        "api": {"revision": "b2", "desired": 2, "ready": 1, "canary": {"weight": 10, "stable": "a1", "paused": True}},
        "web": {"revision": "c3", "desired": 2, "ready": 1,
                "rollout": {"status": "stalled", "reason": "no progress for 600s"}},
        "db": {"revision": "d4", "desired": 1, "ready": 1, "rollout": {"status": "complete"}}}, "replicas": []}
    overview = build_overview(app_name="shop", status=lambda: status, now_s=0.0)
    cells = {s["name"]: s["rollout_text"] for s in overview["services"]}
    assert cells == {"api": "canary 10% beside a1 (paused)", "web": "rolling update stalled: no progress for 600s",
                     "db": ""}
