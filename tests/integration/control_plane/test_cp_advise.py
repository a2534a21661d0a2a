"""`lichen advise` on a real controller: right-sizing from measured usage, written back with comments kept.

A service over-provisioned on purpose (3 replicas of half a core and 2Gi, almost no load) gets requests; the
advice must lower CPU and memory to what the replicas used (never below the measured peak), drop to the
availability floor of 2 replicas, and `--apply` must write exactly those values into lichen.yaml, keeping
every comment, and leave a spec `lichen validate` accepts.
"""

from __future__ import annotations

import json
import re
import threading

import httpx
import pytest
from cp_harness import FAST_PROBES, wait_until

from lichen.spec.quantities import parse_memory_bytes

pytestmark = pytest.mark.slow

SPEC = """\
# an over-provisioned app: lichen advise should shrink it
app: advised
gateway:
  port: {port}   # not 8080

services:
  api:
    entrypoint: ctlsvc:Probe
    replicas: 3          # more than the load needs
    resources: {{cpu: 0.5, memory: 2Gi}}   # far more than it uses
    termination_grace_s: 2
    routes: [{{prefix: /api, strip_prefix: true}}]
    probes: {probes}

observability: {{scrape_interval_s: 0.5, scrape_timeout_s: 0.5, evaluation_interval_s: 0.5}}
sustainability:
  sample_interval_s: 1
  carbon_intensity_g_per_kwh: 300   # fixed, so carbon follows energy
  embodied_kg_co2e: 1000
"""


def test_advise_shrinks_an_oversized_service_and_apply_keeps_the_comments(make_app) -> None:
    app = make_app()
    spec_path = app.dir / "lichen.yaml"
    spec_path.write_text(SPEC.format(port=app.gateway_port, probes=json.dumps(FAST_PROBES)))
    app.up()
    gateway = f"http://127.0.0.1:{app.gateway_port}/api/work"
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=5) as client:
            while not stop.is_set():
                client.post(gateway, json={"text": "x"})
                stop.wait(0.02)

    driver = threading.Thread(target=load, daemon=True)
    driver.start()
    try:
        def advice() -> dict | None:
            report = json.loads(app.cli("advise", "--window", "1m", "--json", "-C", str(app.dir)).stdout)
            row = report["services"][0]
            return report if not row["skipped"] and row["observed"]["samples"] >= 30 else None

        report = wait_until(advice, "advice from enough usage samples", timeout_s=90, every_s=1.0)
    finally:
        stop.set()
        driver.join()
    row = report["services"][0]
    changes = {c["field"]: c for c in row["changes"]}
    assert set(changes) == {"resources.cpu", "resources.memory", "replicas"}, row
    observed = row["observed"]
    cpu = changes["resources.cpu"]["recommended"]
    assert 0.05 <= cpu < 0.5 and cpu >= observed["cpu_cores"]["p95"], changes["resources.cpu"]
    memory = parse_memory_bytes(changes["resources.memory"]["recommended"])
    assert observed["memory_bytes"]["max"] * 1.15 <= memory < 2 * 2**30
    assert report["memory_basis"] in ("working set", "data segment")
    assert changes["replicas"] == {**changes["replicas"], "current": 3, "recommended": 2}
    assert "availability" in changes["replicas"]["reason"]
    assert row["energy_kwh_per_day"] is not None and row["energy_kwh_per_day"] < 0, "a replica fewer saves energy"
    assert row["embodied_g_per_day"] < 0, "fewer reserved cores: a smaller embodied share"

    before = spec_path.read_text()
    applied = json.loads(app.cli("advise", "--window", "1m", "--apply", "--json", "-C", str(app.dir)).stdout)
    after = spec_path.read_text()
    assert applied["applied"] and applied["diff"]
    for line in before.splitlines():
        if "#" in line and "resources" not in line and "replicas" not in line:
            assert line in after.splitlines(), f"a line nobody changed was rewritten: {line!r}"
    assert "# more than the load needs" in after and "# far more than it uses" in after
    written = {c["field"]: c["recommended"] for c in applied["services"][0]["changes"]}
    assert f"replicas: {written['replicas']}" in after
    assert f"{{cpu: {written['resources.cpu']:g}, memory: {written['resources.memory']}}}" in after
    assert app.cli("validate", str(spec_path)).returncode == 0
    table = app.cli("advise", "--window", "1m", "-C", str(app.dir)).stdout
    assert re.search(r"advice from [0-9hms]+ (\(of the 1m asked\) )?of usage", table) and "expected change" in table
