"""The dashboard of a running app (`lichen up`) in Debian's chromium, driven by Playwright.

A real controller runs two replicas of a service that answers 500s (switched
on from the start) under steady traffic. `lichen dashboard --no-open --json`
gives the URL (with the token in its fragment); the page must show the
replicas of the running controller, charts filled from its own query API,
the firing alert its rule engine raised, and the SLO panel with the
availability budget spent, as `lichen slo --json` reports it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from .up_apps import Load, UpApp, wait_until

playwright_sync = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium is not installed"),
]
ALERT = "ModelErrors"
RULES = f"""
groups:
- name: live
  rules:
  - alert: {ALERT}
    expr: sum by (service) (rate(lichen_requests_total{{status=~"5.."}}[5s])) > 0
    for: 1s
    labels: {{severity: page}}
    annotations:
      summary: "{{{{ $labels.service }}}} answers 5xx"
"""


@pytest.fixture
def running(tmp_path: Path):
    (tmp_path / "app").mkdir()
    app = UpApp(tmp_path / "app", {"scrape_interval_s": 1, "scrape_timeout_s": 0.8, "evaluation_interval_s": 1},
                rules=RULES)
    app.fail(True)
    try:
        app.up()
        yield app
    finally:
        app.down()


def test_dashboard_of_a_running_app_shows_live_charts_and_the_firing_alert(running, tmp_path: Path) -> None:
    app = running
    opened = json.loads(app.cli("dashboard", "--app-dir", str(app.dir), "--no-open", "--json").stdout)
    assert opened["url"] == f"{app.url}/dashboard/#token={app.token}"
    ports = wait_until(lambda: len(app.ready_ports()) == 2 and app.ready_ports(), "two ready replicas")
    replica_ids = sorted(r["id"] for r in app.get("/v1/status")["replicas"])
    with Load(ports):
        wait_until(lambda: [a["state"] for a in app.alerts(ALERT)] == ["firing"], "the alert to fire", 45)
        with playwright_sync.sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                user_data_dir=str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            )
            try:
                page = context.new_page()
                failed: list[str] = []
                page.on("requestfailed", lambda r: failed.append(r.url))
                page.goto(opened["url"].replace("/dashboard/#", "/dashboard/?refresh=1#"), wait_until="load")

                # every chart got points from the controller's /api/v1/query_range
                for panel in ("requests", "errors", "latency", "inflight"):
                    page.wait_for_function(
                        f"() => Number(document.querySelector('#chart-{panel}')?.dataset.points || 0) > 0",
                        timeout=30_000,
                    )
                assert "model" in page.locator("#chart-requests .legend").inner_text()

                # the firing alert raised by the running rule engine
                row = page.locator(f'tr.alert[data-state="firing"][data-alertname="{ALERT}"]')
                row.wait_for(timeout=30_000)
                assert "model answers 5xx" in row.inner_text()

                # the replicas and the revision of the running controller
                for replica in replica_ids:
                    page.locator(f'#replicas tr[data-replica="{replica}"]').wait_for(timeout=10_000)
                revision = app.get("/v1/status")["services"]["model"]["revision"]
                assert revision in page.locator('#services tr[data-service="model"]').inner_text()

                # the SLO panel: every request fails, so the availability budget of model is spent, as
                # 'lichen slo --json' (the same report) says too
                slo = page.locator('#slos tr[data-service="model"][data-slo="availability"]')
                slo.wait_for(timeout=30_000)
                assert slo.get_attribute("data-state") == "exhausted", slo.inner_text()
                assert "99.9% not 5xx" in slo.inner_text() and "over 6h" in page.locator("#slo-window").inner_text()
                report = json.loads(app.cli("slo", "model", "--json", "--app-dir", str(app.dir)).stdout)
                cli_row = next(s for s in report["slos"] if s["slo"] == "availability")
                assert cli_row["state"] == "exhausted" and cli_row["budget_left"] < 0

                # charts keep refreshing from live data
                before = int(page.locator("body").get_attribute("data-refreshes") or 0)
                page.wait_for_function(f"() => Number(document.body.dataset.refreshes || 0) >= {before + 2}",
                                       timeout=30_000)
                assert page.locator("#error").is_hidden(), page.locator("#error").inner_text()
                assert not [u for u in failed if "/api/" in u]
            finally:
                context.close()
