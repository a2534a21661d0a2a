"""The autoscaler under a real `lichen up`: a step of open-loop POSTs scales a service up (an event with the
policy's reason), and when the load stops it scales back down through confirmed drains; no request fails.
With `min: 0` an idle service goes to zero, and the first request after is held and answered."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import yaml
from cp_harness import FAST_PROBES, wait_until
from waiting import free_port

from lichen.testing import OpenLoopLoad

pytestmark = pytest.mark.slow

# Short windows, so the test takes seconds: 50 ms per request at 120 requests/s is 6 in flight, 3 replicas' worth.
AUTOSCALE = {"min": 1, "max": 4, "metric": "inflight", "target": 2, "stable_window_s": 4, "panic_window_s": 2,
             "scale_down_stabilization_s": 2}


def write_spec(app: Any, port: int, autoscale: dict[str, Any] = AUTOSCALE) -> None:
    service = {"entrypoint": "ctlsvc:Probe", "termination_grace_s": 5, "probes": FAST_PROBES, "autoscale": autoscale,
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


def test_scale_to_zero_and_back_answers_the_first_request(make_app) -> None:
    app = make_app()
    port = free_port()
    write_spec(app, port, {**AUTOSCALE, "min": 0, "scale_to_zero_after_s": 2})
    app.up()
    wait_until(lambda: app.status()["services"]["web"]["desired"] == 0 and not app.replicas(), "scaled to zero",
               timeout_s=60)
    (down,) = scaled(app)
    assert down["message"].startswith("scaled web 1→0: no request for ") and "scale_to_zero_after_s 2" in down["message"]
    # the first request finds no replica: the gateway holds it, asks the controller, and answers it
    first = httpx.post(f"http://127.0.0.1:{port}/web/work", json={"text": "wake"}, timeout=30)
    assert first.status_code == 200, first.text
    assert first.json()["replica"]
    woken = [e for e in app.events("web") if e["kind"] == "Scaled" and e["reason"] == "activator"]
    assert [e["message"] for e in woken] == ["scaled web 0→1: a request is held at the gateway"]
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert 'lichen_cold_start_seconds_count{service="web"} 1.0' in metrics
    assert 'lichen_gateway_activations_total{outcome="released",service="web"} 1.0' in metrics
    status = app.status()["services"]["web"]
    assert status["desired"] == 1 and status["ready"] == 1
    # idle again: back to zero, through a drain
    wait_until(lambda: app.status()["services"]["web"]["desired"] == 0 and not app.replicas(), "zero again",
               timeout_s=60)
    assert not [e for e in app.events("web") if e["kind"] == "Killed"]
