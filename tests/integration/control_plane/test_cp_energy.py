"""`lichen energy` on a real controller: energy, carbon and the SCI per service and revision, with sources and bands.

One service behind the gateway gets requests; after a restart it has two revisions. The report must give each
revision its own energy and requests, a band around every modelled figure, carbon at the fixed intensity × PUE,
the node's idle energy apart, and the meter's cost; `lichen validate` refuses an unknown region with its line.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import psutil
import pytest
import yaml
from cp_harness import wait_until

pytestmark = pytest.mark.slow
FAST = {"scrape_interval_s": 0.5, "scrape_timeout_s": 0.5, "evaluation_interval_s": 0.5}
INTENSITY_G_PER_KWH, PUE = 400.0, 1.5


def test_lichen_energy_reports_each_revision_with_sources_and_bands(make_app) -> None:
    app = make_app()
    app.write_spec(api={"replicas": 1, "routes": [{"prefix": "/api", "strip_prefix": True}]})
    spec = yaml.safe_load((app.dir / "lichen.yaml").read_text())
    spec["observability"] = FAST
    spec["sustainability"] = {"sample_interval_s": 1, "carbon_intensity_g_per_kwh": INTENSITY_G_PER_KWH,
                              "pue": PUE, "embodied_kg_co2e": 1000}
    (app.dir / "lichen.yaml").write_text(yaml.safe_dump(spec))
    app.up()
    gateway = f"http://127.0.0.1:{app.gateway_port}/api/work"

    def report_with(revisions: int) -> dict | None:
        for _ in range(20):
            assert httpx.post(gateway, json={"text": "x"}, timeout=5).status_code == 200
        report = json.loads(app.cli("energy", "--window", "5m", "--json", "-C", str(app.dir)).stdout)
        # embodied carbon follows the replica's CPU time, which /proc shows in clock ticks, so an early
        # interval may count energy before it counts any embodied share: wait for both
        rows = [r for r in report["revisions"] if r["service"] == "api" and r["requests"] > 0
                and (r.get("energy_j") or {}).get("value", 0) > 0 and (revisions > 1 or r["embodied_g"] > 0)]
        return report if len(rows) >= revisions else None

    first = wait_until(lambda: report_with(1), "an energy report with requests", timeout_s=60, every_s=0.5)
    row = next(r for r in first["revisions"] if r["service"] == "api")
    energy = row["energy_j"]
    assert energy["sources"] in (["model"], ["rapl"])
    assert energy["value"] > 0 and energy["low"] <= energy["value"] <= energy["high"]
    if energy["sources"] == ["model"]:
        assert energy["low"] < energy["value"] < energy["high"], "a modelled figure always shows a band"
        assert "rapl" in first["meter"]["problems"]
    carbon = row["carbon_g"]["value"]
    assert carbon == pytest.approx(energy["value"] * PUE * INTENSITY_G_PER_KWH / 3.6e6, rel=0.05)
    assert row["energy_per_request_j"]["value"] == pytest.approx(energy["value"] / row["requests"])
    assert row["embodied_g"] > 0
    assert row["sci_g_per_1000_requests"]["value"] == pytest.approx(
        (carbon + row["embodied_g"]) / row["requests"] * 1000, rel=0.05)
    assert first["node"]["idle_j"]["value"] > 0, "idle energy is reported apart"
    assert first["meter"]["intensity_g_per_kwh"] == {"value": INTENSITY_G_PER_KWH, "low": INTENSITY_G_PER_KWH,
                                                     "high": INTENSITY_G_PER_KWH, "source": "spec"}
    assert first["accounting_cost"]["cpu_s"] > 0

    old = row["revision"]
    revision = json.loads(app.cli("restart", "api", "--json", "-C", str(app.dir)).stdout)["revision"]
    wait_until(lambda: {r["revision"] for r in app.replicas("Ready") if r["service"] == "api"} == {revision},
               "the restart of api", timeout_s=90)
    second = wait_until(lambda: report_with(2), "both revisions in the report", timeout_s=60, every_s=0.5)
    by_revision = {r["revision"]: r for r in second["revisions"] if r["service"] == "api"}
    assert {old, revision} <= set(by_revision)
    service = next(s for s in second["services"] if s["service"] == "api")
    assert service["requests"] == pytest.approx(sum(r["requests"] for r in by_revision.values()))
    table = app.cli("energy", "--window", "5m", "-C", str(app.dir)).stdout
    assert revision in table and "idle (not spread over services)" in table and "accounting cost" in table

    spec["sustainability"]["region"] = "XX"
    (app.dir / "lichen.yaml").write_text(yaml.safe_dump(spec))
    refused = app.cli("validate", str(app.dir / "lichen.yaml"), check=False)
    assert refused.returncode == 2 and "sustainability.region" in refused.stdout + refused.stderr
    assert "not in codecarbon's energy-mix table" in refused.stdout + refused.stderr


class _ElectricityMaps(BaseHTTPRequestHandler):
    """Electricity Maps v3's latest-intensity endpoint; ``status`` set on the server picks the answer."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        server: Any = self.server
        server.seen.append((self.path, self.headers.get("auth-token")))
        body = json.dumps({"zone": "DE", "carbonIntensity": 123, "datetime": "2026-12-04T00:00:00.000Z"}
                          if server.status == 200 else {"message": "boom"}).encode()
        self.send_response(server.status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def electricity_maps() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ElectricityMaps)
    server.seen, server.status = [], 200  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("status", [200, 500])
def test_an_intensity_api_is_used_or_degrades_to_the_region_with_an_event(make_app, electricity_maps, status,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    electricity_maps.status = status  # type: ignore[attr-defined]
    monkeypatch.setenv("EM_TEST_TOKEN", "em-secret")  # the controller inherits the CLI's environment
    app = make_app()
    app.write_spec(api={"replicas": 1})
    spec = yaml.safe_load((app.dir / "lichen.yaml").read_text())
    spec["sustainability"] = {"sample_interval_s": 1, "region": "DE", "intensity_api": {
        "provider": "electricitymaps", "url": f"http://127.0.0.1:{electricity_maps.server_port}",
        "token_env": "EM_TEST_TOKEN"}}
    (app.dir / "lichen.yaml").write_text(yaml.safe_dump(spec))
    app.up()

    def intensity() -> dict | None:
        report = json.loads(app.cli("energy", "--window", "1m", "--json", "-C", str(app.dir)).stdout)
        return report["meter"]["intensity_g_per_kwh"]

    used = wait_until(intensity, "the meter's first priced sample", timeout_s=30, every_s=0.5)
    assert electricity_maps.seen[0] == ("/v3/carbon-intensity/latest?zone=DE", "em-secret")  # type: ignore[attr-defined]
    events = [e for e in app.events() if e["kind"] == "EnergySource"]
    if status == 200:
        assert used == {"value": 123.0, "low": 123.0, "high": 123.0, "source": "electricitymaps:DE"}
        assert not [e for e in events if e["reason"] == "IntensityApiFailed"]
    else:
        assert used["source"].startswith("codecarbon global_energy_mix.json: Germany")
        assert used["low"] < used["value"] < used["high"]
        failed = [e for e in events if e["reason"] == "IntensityApiFailed"]
        assert len(failed) == 1 and "HTTP 500" in failed[0]["message"] and "em-secret" not in failed[0]["message"]
    logs = list((app.dir / ".lichen").rglob("*.log"))
    assert any(path.name == "controller.log" for path in logs), logs
    assert not any("em-secret" in path.read_text(errors="replace") for path in logs), "the token reached a log"
    for replica in app.replicas():  # a secret of the controller's: no service process inherits it
        assert "EM_TEST_TOKEN" not in psutil.Process(replica["pid"]).environ()
