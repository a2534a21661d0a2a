"""A healthy app under `lichen up` shows no orange or red risk on its dashboard, in Debian's chromium.

Two replicas of a service that never fails (its ``setup()`` takes 2 s, as loading a model does) run
under the real controller with the default rule pack, and get steady traffic. Every risk the page
paints -- the header badges, the services table, the headroom table -- must be green (or grey for
"no data"), and the chart legends must show "–" for a series that has no current sample: the
replicas' "running" state, left behind once both replicas became ready.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from .up_apps import FAST_PROBES, Load, UpApp, free_port, wait_until

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
HEALTHY = '''
import time

from lichen import Service, endpoint


class Healthy(Service):
    def setup(self) -> None:
        time.sleep(2.0)  # loads a model: the replica runs, not ready, for 2 s

    @endpoint("/predict", method="GET", timeout_s=5)
    def predict(self) -> dict:
        return {"ok": True}
'''
# what the page paints, read in the browser: the risk bands and the background colour of every risk mark
PAINTED = """() => {
  const colour = (value) => {
    const probe = document.createElement("div");
    probe.style.background = value;
    document.body.appendChild(probe);
    const rgb = getComputedStyle(probe).backgroundColor;
    probe.remove();
    return rgb;
  };
  const marks = [...document.querySelectorAll(".risk .bar > span, .badge")];
  return {
    alarming: [colour("var(--pending)"), colour("var(--firing)")],
    painted: marks.map((e) => getComputedStyle(e).backgroundColor),
    bands: [...document.querySelectorAll("[data-risk-band]")].map((e) => e.dataset.riskBand),
  };
}"""


class HealthyApp(UpApp):
    def __init__(self, root: Path) -> None:  # noqa: D107 - the same harness, with a service that never fails
        self.dir = root
        (root / "healthy.py").write_text(HEALTHY)
        spec = {
            "app": "healthy",
            "gateway": {"port": free_port()},
            "services": {"model": {"entrypoint": "healthy:Healthy", "replicas": 2, "termination_grace_s": 2,
                                   "probes": FAST_PROBES}},
            "observability": {"scrape_interval_s": 1, "scrape_timeout_s": 0.8, "evaluation_interval_s": 1},
        }
        (root / "lichen.yaml").write_text(yaml.safe_dump(spec))
        self.info = {}


@pytest.fixture
def healthy(tmp_path: Path):
    (tmp_path / "app").mkdir()
    app = HealthyApp(tmp_path / "app")
    try:
        app.up()
        yield app
    finally:
        app.down()


RATED = {"LichenReplicaDown", "LichenInflightNearLimit", "LichenScrapeFailing", "LichenLatencyBudgetBurn"}


def rated_rules(app: UpApp) -> list[dict]:
    """The headroom rows of `model` that have data, once the replicas' request metrics reach them."""
    overview = app.get("/dashboard/api/overview")
    rows = [r for r in overview["headroom"] if r["service"] == "model" and r["headroom"] is not None]
    return rows if {r["alert"] for r in rows} >= RATED else []


def test_a_healthy_app_shows_no_orange_or_red(healthy: HealthyApp, tmp_path: Path) -> None:
    app = healthy
    ports = wait_until(lambda: len(app.ready_ports()) == 2 and app.ready_ports(), "two ready replicas")
    opened = json.loads(app.cli("dashboard", "--app-dir", str(app.dir), "--no-open", "--json").stdout)
    with Load(ports):
        rows = wait_until(lambda: rated_rules(app), "headroom rows with data under traffic", 30)
        assert all(r["headroom"] >= 0.9 for r in rows), rows
        overview = app.get("/dashboard/api/overview")
        warning = overview["risk_warning"]
        assert overview["alerts"] == []
        assert all(risk is None or risk < warning for risk in overview["risk"].values()), overview["risk"]
        assert overview["risk"]["model"] is not None and overview["risk"]["model"] < 0.1

        with playwright_sync.sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                user_data_dir=str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            )
            try:
                page = context.new_page()
                page.goto(opened["url"].replace("/dashboard/#", "/dashboard/?refresh=1#"), wait_until="load")
                page.locator('#services tr[data-service="model"] [data-risk-band]').wait_for(timeout=30_000)
                page.locator("#headroom tbody tr").first.wait_for(timeout=30_000)
                before = int(page.locator("body").get_attribute("data-refreshes") or 0)
                page.wait_for_function(f"() => Number(document.body.dataset.refreshes || 0) >= {before + 2}",
                                       timeout=30_000)

                painted = page.evaluate(PAINTED)
                assert painted["painted"], "no risk marks on the page"
                assert not set(painted["painted"]) & set(painted["alarming"]), painted
                assert set(painted["bands"]) <= {"ok", "nodata"} and "ok" in painted["bands"], painted["bands"]
                assert "1.00" not in page.locator("#risk-badges").inner_text()

                # legends: "ready" shows both replicas; "running", which ended when they became ready, shows "–"
                ready = page.locator('#chart-replicas .legend [data-legend="model ready"]')
                ready.wait_for(timeout=30_000)
                assert ready.inner_text().strip().endswith("2.0"), ready.inner_text()
                running = page.locator('#chart-replicas .legend [data-legend="model running"]')
                running.wait_for(timeout=30_000)
                assert running.get_attribute("data-current") == "" and running.inner_text().strip().endswith("–")
                assert page.locator("#error").is_hidden(), page.locator("#error").inner_text()
            finally:
                context.close()
