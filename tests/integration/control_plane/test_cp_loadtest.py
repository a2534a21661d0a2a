"""`lichen loadtest APP` finds the gateway of the app's running `lichen up` and loads it through the routes."""

from __future__ import annotations

import json

import pytest
import yaml
from cp_harness import FAST_PROBES

pytestmark = pytest.mark.slow


def test_loadtest_loads_the_gateway_of_a_running_app(make_app) -> None:
    app = make_app()
    service = {"entrypoint": "ctlsvc:Probe", "termination_grace_s": 2, "probes": FAST_PROBES, "replicas": 2,
               "routes": [{"prefix": "/web", "strip_prefix": True}]}
    (app.dir / "lichen.yaml").write_text(yaml.safe_dump({"app": "loadtest", "gateway": {"port": app.gateway_port},
                                                         "services": {"web": service}}))
    down = app.cli("loadtest", str(app.dir), "--route", "/web/whoami", "--rate", "10", "--duration", "1s",
                   check=False)
    assert down.returncode != 0 and "no controller runs" in down.stderr and "--url" in down.stderr
    app.up()
    done = app.cli("loadtest", str(app.dir), "--route", "/web/whoami", "--rate", "100", "--duration", "2s",
                   "--profile", "ramp", "--json")
    report = json.loads(done.stdout)
    assert report["url"] == f"http://127.0.0.1:{app.gateway_port}"
    assert report["scheduled"] == report["answered"] == 100 and report["statuses"] == {"200": 100}
    assert report["failures"] == {} and report["latency_ms"]["p99"] > 0
