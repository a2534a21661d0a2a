"""The autoscaler under a real `lichen up`: a step of open-loop POSTs scales a service up (an event with the
policy's reason), and when the load stops it scales back down through confirmed drains; no request fails."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from cp_harness import FAST_PROBES, wait_until
from waiting import free_port

from lichen.testing import OpenLoopLoad

pytestmark = pytest.mark.slow

# Short windows, so the test takes seconds: 50 ms per request at 120 requests/s is 6 in flight, 3 replicas' worth.
AUTOSCALE = {"min": 1, "max": 4, "metric": "inflight", "target": 2, "stable_window_s": 4, "panic_window_s": 2,
             "scale_down_stabilization_s": 2}


def write_spec(app: Any, port: int) -> None:
    service = {"entrypoint": "ctlsvc:Probe", "termination_grace_s": 5, "probes": FAST_PROBES, "autoscale": AUTOSCALE,
               "routes": [{"prefix": "/web", "strip_prefix": True}]}
    (app.dir / "lichen.yaml").write_text(yaml.safe_dump({"app": "elastic", "gateway": {"port": port},
                                                        "services": {"web": service}}))


def scaled(app: Any) -> list[dict[str, Any]]:
    return [e for e in app.events("web") if e["kind"] == "Scaled" and e["reason"] == "autoscaler"]


def test_a_step_of_load_scales_up_and_down_with_no_failed_request(make_app) -> None:
    app = make_app()
    port = free_port()
    write_spec(app, port)
    app.up()
    wait_until(lambda: app.status()["services"]["web"]["ready"] == 1, "one ready replica")
    with OpenLoopLoad(f"http://127.0.0.1:{port}/web/slow", rate_per_s=120, body={"text": "x"}) as load:
        wait_until(lambda: app.status()["services"]["web"]["ready"] >= 2 and load.sent >= 100, "the scale-up",
                   timeout_s=60)
        status = app.status()["services"]["web"]
        assert status["desired"] >= 2 and status["autoscale"]["metric"] == "inflight"
    up = scaled(app)[0]["message"]
    assert up.startswith("scaled web 1→") and "in-flight" in up and "target 2 per replica" in up, up
    # a trickle keeps going through the scale-down: the replicas it stops are drained, nothing fails
    with OpenLoopLoad(f"http://127.0.0.1:{port}/web/slow", rate_per_s=10, body={"text": "x"}) as trickle:
        wait_until(lambda: app.status()["services"]["web"]["desired"] == 1 and len(app.replicas()) == 1,
                   "the scale-down after the load dropped", timeout_s=90)
    down = scaled(app)[-1]["message"]
    assert "→1" in down, down
    for run in (load, trickle):
        assert run.sent > 0 and run.answered == run.sent
        assert run.failures == [], f"{len(run.failures)} of {run.sent} POSTs failed: {run.failures[:5]}"
        assert set(run.outcomes) == {"200"}, run.outcomes
    assert load.sent >= 100
    stops = [e for e in app.events("web") if e["kind"] == "Stopping"]
    assert stops and all("the gateway confirmed it no longer routes here" in e["message"] for e in stops), stops
