"""The dashboard in a real browser: Debian's chromium driven by Playwright.

The harness runs the metrics engine's store, PromQL engine, rule manager
(loaded with the app's default rule pack) and Prometheus query router, fills
the store with ten minutes of replica metrics in which one replica goes down,
evaluates the rules over that time so ``LichenReplicaDown`` fires, and serves
the dashboard beside the query API on loopback with a bearer token.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

playwright_sync = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium is not installed"),
]
TOKEN = "dash-secret"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class Harness:
    """Store + engine + rules + query router + dashboard, on a real uvicorn server."""

    def __init__(self) -> None:
        from fastapi import FastAPI

        from lichen.observe.dashboard import build_dashboard_router
        from lichen.observe.default_rules import default_rules_yaml
        from lichen.observe.http_api import build_query_router
        from lichen.observe.promql import Engine
        from lichen.observe.rules import RuleManager
        from lichen.observe.series import SeriesStore
        from lichen.spec.models import AppSpec

        spec = AppSpec(app="shop", services={"api": {"entrypoint": "shop.api:Api"}})
        self.store = SeriesStore()
        self.engine = Engine(self.store)
        self.rules = RuleManager(self.store, self.engine)
        self.rules.load_text(default_rules_yaml(spec, interval="15s"))
        self.now = time.time()
        self.i = 0
        start = self.now - 600
        while start + 5 * self.i <= self.now:
            self.append_step(start + 5 * self.i)
        for k in range(0, 601, 15):
            self.rules.evaluate_due(start + k)
        events = [
            {"id": 1, "at": self.now - 300, "service": "api", "replica": "api-2", "kind": "Warning",
             "reason": "Unhealthy", "message": "liveness probe failed 3 times"},
        ]
        app = FastAPI()
        app.include_router(build_query_router(self.store, self.engine, self.rules))  # the real query API
        app.include_router(
            build_dashboard_router(
                app_name="shop", engine=self.engine, rules=self.rules, events=lambda limit: events[-limit:],
                token=TOKEN, refresh_s=1.0,
            )
        )
        self.app = app

    def append_step(self, t: float) -> None:
        ms = int(t * 1000)
        i = self.i
        for replica, port in (("api-1", 9001), ("api-2", 9002)):
            base = {"service": "api", "revision": "r7", "replica": replica, "instance": f"127.0.0.1:{port}"}
            down = replica == "api-2" and t > self.now - 300
            self.store.append({"__name__": "up", **base}, ms, 0.0 if down else 1.0)
            if down:
                continue
            ep = {**base, "endpoint": "predict", "method": "POST"}
            self.store.append({"__name__": "lichen_requests_total", **ep, "status": "200"}, ms, 20.0 * i)
            self.store.append({"__name__": "lichen_requests_total", **ep, "status": "500"}, ms, 0.5 * i)
            for le, share in (("0.05", 0.5), ("0.25", 0.9), ("1.0", 0.99), ("+Inf", 1.0)):
                self.store.append(
                    {"__name__": "lichen_request_duration_seconds_bucket", **ep, "le": le}, ms, 20.5 * i * share
                )
            self.store.append({"__name__": "lichen_request_duration_seconds_count", **ep}, ms, 20.5 * i)
            self.store.append({"__name__": "lichen_inflight_requests", **base, "endpoint": "predict"}, ms, 2.0 + i % 3)
            self.store.append({"__name__": "lichen_max_concurrency", **base, "endpoint": "predict"}, ms, 64.0)
        self.i += 1


@pytest.fixture(scope="module")
def server():
    import uvicorn

    harness = Harness()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(harness.app, host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield harness, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_dashboard_shows_live_charts_and_the_firing_alert(server, tmp_path: Path) -> None:
    harness, base = server
    firing = [a.labels["alertname"] for a in harness.rules.firing()]
    assert "LichenReplicaDown" in firing  # the harness really fires it

    with playwright_sync.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            user_data_dir=str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
        )
        try:
            page = context.new_page()
            failed_requests: list[str] = []
            page.on("requestfailed", lambda r: failed_requests.append(r.url))
            page.goto(f"{base}/dashboard/?refresh=1#token={TOKEN}", wait_until="load")

            # every chart received data points from /api/v1/query_range
            for panel in ("requests", "errors", "latency", "inflight"):
                page.wait_for_function(
                    f"() => Number(document.querySelector('#chart-{panel}')?.dataset.points || 0) > 0",
                    timeout=30_000,
                )
            latency = page.locator("#chart-latency")
            assert int(latency.get_attribute("data-series")) == 3  # p50, p95, p99
            assert page.locator("#chart-latency svg path").count() == 3
            legend = page.locator("#chart-latency .legend").inner_text()
            assert "api p50" in legend and "api p99" in legend

            # the firing alert is shown with its state
            row = page.locator('tr.alert[data-state="firing"][data-alertname="LichenReplicaDown"]')
            row.wait_for(timeout=30_000)
            assert "replica api-2 of api is down" in row.inner_text()
            assert "firing" in row.locator(".state").inner_text()

            # services, replicas, revisions, risk, headroom and events are on the page
            assert page.locator('#replicas tr[data-replica="api-2"] .state').inner_text() == "Down"
            assert "r7" in page.locator('#services tr[data-service="api"]').inner_text()
            assert page.locator("#risk-badges").inner_text().strip() == "api 1.00"
            assert page.locator("#headroom tbody tr").count() > 0
            assert "liveness probe failed" in page.locator("#events").inner_text()

            # charts keep polling: new data appended now shows up on later refreshes
            before = int(page.locator("body").get_attribute("data-refreshes") or 0)
            harness.append_step(time.time())
            page.wait_for_function(
                f"() => Number(document.body.dataset.refreshes || 0) >= {before + 2}", timeout=30_000
            )
            assert page.locator("#error").is_hidden(), page.locator("#error").inner_text()
            assert not [u for u in failed_requests if "/api/" in u]
        finally:
            context.close()


def test_data_needs_the_token(server) -> None:
    import httpx

    _, base = server
    assert httpx.get(f"{base}/dashboard/", timeout=10).status_code == 200  # the page itself holds no data
    assert httpx.get(f"{base}/dashboard/api/overview", timeout=10).status_code == 401
    ok = httpx.get(f"{base}/dashboard/api/overview", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert ok.status_code == 200 and ok.json()["risk"] == {"api": 1.0}
