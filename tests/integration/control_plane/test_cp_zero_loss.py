"""A planned stop loses no request: open-loop POSTs through `lichen restart` and `lichen scale` down.

POSTs are not retried by the gateway (they may not be idempotent), so any
request routed to a replica that already stopped accepting would reach the
client as a 502/503. The controller withdraws a stopping replica, waits until
the gateway confirms a table without it, and only then sends SIGTERM; the
replica keeps accepting for its drain window and finishes what it has.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import yaml
from cp_harness import FAST_PROBES, wait_until
from waiting import free_port

from lichen.testing import OpenLoopLoad

pytestmark = pytest.mark.slow


def write_spec(app: Any, port: int, replicas: int) -> None:
    service = {"entrypoint": "ctlsvc:Probe", "termination_grace_s": 5, "probes": FAST_PROBES, "replicas": replicas,
               "routes": [{"prefix": "/web", "strip_prefix": True}]}
    spec = {"app": "zeroloss", "gateway": {"port": port}, "services": {"web": service}}
    (app.dir / "lichen.yaml").write_text(yaml.safe_dump(spec))


def settled(app: Any, desired: int) -> bool:
    """The rollout finished: exactly ``desired`` replicas, all of the current revision and ready."""
    state = app.status()
    web = state["services"]["web"]
    replicas = [r for r in state["replicas"] if r["service"] == "web"]
    return ((web.get("rollout") or {}).get("status") in (None, "complete") and len(replicas) == desired
            and all(r["state"] == "Ready" and r["revision"] == web["revision"] for r in replicas))


def gateway_samples(port: int, name: str) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith(name)}


@pytest.mark.parametrize("replicas", [1, 2])
def test_open_loop_posts_through_restarts_and_a_scale_down_lose_nothing(make_app, replicas: int) -> None:
    app = make_app()
    port = free_port()
    write_spec(app, port, replicas)
    app.up()
    with OpenLoopLoad(f"http://127.0.0.1:{port}/web/work", rate_per_s=50, body={"text": "x"}) as load:
        wait_until(lambda: load.answered >= 25, "traffic through the gateway")
        for _ in range(3):
            revision = app.status()["services"]["web"]["revision"]
            app.cli("restart", "web", "-C", str(app.dir))
            wait_until(lambda r=revision: app.status()["services"]["web"]["revision"] != r, "a new revision")
            wait_until(lambda: settled(app, replicas), "the rolling restart to finish", timeout_s=60)
        if replicas > 1:
            app.cli("scale", "web", "1", "-C", str(app.dir))
            wait_until(lambda: settled(app, 1), "the scale-down to finish", timeout_s=60)
        sent_during = load.sent
    assert load.sent >= 150 and load.answered == load.sent
    assert load.failures == [], f"{len(load.failures)} of {load.sent} POSTs failed: {load.failures[:5]}"
    assert set(load.outcomes) == {"200"}, load.outcomes
    assert sent_during > 0

    # every old replica got SIGTERM only after the gateway confirmed a table without it
    stops = [e for e in app.events("web") if e["kind"] == "Stopping"]
    assert len(stops) == 3 * replicas + (1 if replicas > 1 else 0)
    assert all("the gateway confirmed it no longer routes here" in e["message"] for e in stops), stops
    # a planned stop is neither a connect error nor an outlier ejection at the gateway
    attempts = gateway_samples(port, "lichen_gateway_upstream_attempts_total")
    assert attempts and all('outcome="ok"' in key for key in attempts), attempts
    assert not any(v for v in gateway_samples(port, "lichen_gateway_ejections_total").values())
