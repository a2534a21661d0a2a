"""`lichen slo`, `lichen logs` and `lichen status` through the real CLI, stdout piped, on a real controller.

Two services run; `api` gets requests, `idle` none. `lichen slo --json` reads attainment, budget and
burn rates from the controller's series store (and "no traffic" for `idle`); `lichen logs` merges the
live replicas by time and, after a rolling restart, leaves the stopped replicas to `--all`; piped
tables print ids and paths whole.
"""

from __future__ import annotations

import json

import httpx
import pytest
import yaml
from cp_harness import wait_until

pytestmark = pytest.mark.slow
OBSERVABILITY = {"scrape_interval_s": 0.5, "scrape_timeout_s": 0.5, "evaluation_interval_s": 0.5}


def _ts(line: str) -> str | None:
    body = line.split(" | ", 1)[1]
    if not body.startswith("{"):
        return None
    return json.loads(body).get("ts")


def test_slo_logs_and_status_read_well_when_piped(make_app) -> None:
    app = make_app()
    app.write_spec(api={"replicas": 2, "slo": {"availability": 0.99}}, idle={"replicas": 1})
    spec = yaml.safe_load((app.dir / "lichen.yaml").read_text())
    spec["observability"] = OBSERVABILITY
    (app.dir / "lichen.yaml").write_text(yaml.safe_dump(spec))
    app.up()
    api = [r for r in app.replicas("Ready") if r["service"] == "api"]
    assert len(api) == 2

    def slo_with_traffic() -> dict | None:
        for replica in api:
            for _ in range(5):
                httpx.post(f"http://127.0.0.1:{replica['port']}/work", json={"text": "x"}, timeout=5)
        report = json.loads(app.cli("slo", "--json", "-C", str(app.dir)).stdout)
        rows = {(s["service"], s["slo"]): s for s in report["slos"]}
        return report if rows[("api", "availability")]["requests"] > 0 else None

    report = wait_until(slo_with_traffic, "lichen slo sees the requests", timeout_s=60, every_s=0.5)
    assert report["window"] == "6h"  # observability.retention's default
    rows = {(s["service"], s["slo"]): s for s in report["slos"]}
    availability = rows[("api", "availability")]
    assert availability["attainment"] == 1.0 and availability["budget_left"] == 1.0
    assert availability["state"] == "ok" and availability["error_budget"] == pytest.approx(0.01)
    assert availability["burn_rates"]["5m"] == 0.0
    assert rows[("idle", "availability")]["state"] == "no traffic"
    assert rows[("idle", "latency")]["attainment"] is None
    table = app.cli("slo", "api", "-C", str(app.dir)).stdout
    assert "SLOs over 6h" in table and "99% not 5xx" in table and "100%" in table and "idle" not in table
    assert "longer than observability.retention" in app.cli("slo", "--window", "7d", "-C", str(app.dir),
                                                             check=False).stderr

    lines = app.cli("logs", "api", "-C", str(app.dir)).stdout.splitlines()
    assert {line.split(" | ")[0] for line in lines} == {r["id"] for r in api}
    stamps = [ts for ts in map(_ts, lines) if ts]
    assert stamps == sorted(stamps), "lines of the two replicas are merged by their ts"

    old = {r["id"] for r in api}
    revision = json.loads(app.cli("restart", "api", "--json", "-C", str(app.dir)).stdout)["revision"]
    wait_until(lambda: {r["revision"] for r in app.replicas() if r["service"] == "api"} == {revision}
               and len(app.replicas("Ready")) == 3, "the rolling restart of api", timeout_s=90)
    status = json.loads(app.cli("status", "--json", "-C", str(app.dir)).stdout)
    assert status["services"]["api"]["revisions"] == [
        {"revision": revision, "current": True, "replicas": 2, "ready": 2}]
    live = {r["id"] for r in app.replicas() if r["service"] == "api"}
    shown = {line.split(" | ")[0] for line in app.cli("logs", "api", "-C", str(app.dir)).stdout.splitlines()}
    assert shown == live
    everything = {line.split(" | ")[0] for line in app.cli("logs", "api", "--all", "-C", str(app.dir)).stdout.splitlines()}
    assert everything == live | old

    table = app.cli("status", "-C", str(app.dir)).stdout  # piped, COLUMNS=200 in the harness: still whole
    assert str(app.dir) in table.splitlines()[0]
    assert all(replica in table for replica in live) and "…" not in table
