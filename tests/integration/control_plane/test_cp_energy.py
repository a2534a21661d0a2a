"""`lichen energy` on a real controller: energy, carbon and the SCI per service and revision, with sources and bands.

One service behind the gateway gets requests; after a restart it has two revisions. The report must give each
revision its own energy and requests, a band around every modelled figure, carbon at the fixed intensity × PUE,
the node's idle energy apart, and the meter's cost; `lichen validate` refuses an unknown region with its line.
"""

from __future__ import annotations

import json

import httpx
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
        rows = [r for r in report["revisions"] if r["service"] == "api" and r["requests"] > 0
                and (r.get("energy_j") or {}).get("value", 0) > 0]
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
