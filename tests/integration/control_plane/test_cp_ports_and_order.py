"""Stable ports and start order through the real CLI with real processes.

* `services.<name>.depends_on`: `lichen up` starts a dependent only once its dependency is ready, and
  `lichen down` stops it first (read back from `lichen events --json`, whose events carry timestamps);
* `control.port` and `replica_ports` put the control API and the replicas where the spec says;
* a second app asking for the gateway port of a running one fails at once, exit 1, naming that app.
"""

from __future__ import annotations

import json
import os
import socket

import httpx
import pytest
import yaml
from cp_harness import free_port

pytestmark = pytest.mark.slow


def _edit(target, **top) -> None:
    spec = yaml.safe_load((target.dir / "lichen.yaml").read_text())
    spec.update(top)
    (target.dir / "lichen.yaml").write_text(yaml.safe_dump(spec))


def test_depends_on_orders_the_start_and_reverses_it_at_down(make_app) -> None:
    app = make_app()
    app.write_spec(store={"replicas": 2}, api={"depends_on": ["store"]}, web={"depends_on": ["api"]})
    app.up()
    assert {r["service"] for r in app.replicas("Ready")} == {"store", "api", "web"}
    app.cli("down", str(app.dir))
    events = json.loads(app.cli("events", "--json", "--limit", "1000", "-C", str(app.dir)).stdout)

    def times(service: str, kind: str) -> list[float]:
        return [e["at"] for e in events if e["service"] == service and e["kind"] == kind]

    store_ready, api_started = max(times("store", "Ready")), min(times("api", "Started"))
    api_ready, web_started = max(times("api", "Ready")), min(times("web", "Started"))
    assert len(times("store", "Ready")) == 2
    assert store_ready <= api_started, "api starts once both store replicas are ready"
    assert api_ready <= web_started, "web starts once api is ready"
    assert times("api", "WaitingForDependencies") and times("web", "WaitingForDependencies")
    web_stopped, api_stopping = max(times("web", "Stopped")), min(times("api", "Stopping"))
    api_stopped, store_stopping = max(times("api", "Stopped")), min(times("store", "Stopping"))
    assert web_stopped <= api_stopping, "lichen down stops web before api"
    assert api_stopped <= store_stopping, "and api before store"


def _listener_outside(first: int, last: int) -> socket.socket:
    """A listening socket on a free port outside ``first``-``last``."""
    while True:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        if not first <= listener.getsockname()[1] <= last:
            listener.listen()
            return listener
        listener.close()


def test_ports_from_the_spec_and_a_second_app_on_a_taken_gateway_port(make_app) -> None:
    first = make_app()
    control_port = free_port()
    low = free_port()  # a range starting at a port that was free a moment ago, apart from the app's own ports
    while low <= max(control_port, first.gateway_port) and min(control_port, first.gateway_port) <= low + 200:
        low = free_port()
    first.write_spec(api={"replicas": 2})
    _edit(first, control={"port": control_port}, replica_ports=f"{low}-{low + 200}")
    out = first.up().stdout
    info = json.loads(first.workspace.controller_file.read_text())
    assert info["url"] == f"http://127.0.0.1:{control_port}" and f"127.0.0.1:{control_port}" in out
    assert httpx.get(f"{info['url']}/healthz", timeout=5).status_code == 200
    ports = [r["port"] for r in first.replicas("Ready")]
    assert len(ports) == 2 and all(low <= p <= low + 200 for p in ports), ports

    second = make_app()
    second.gateway_port = first.gateway_port
    second.write_spec(web={})
    _edit(second, app="second")
    result = second.cli("up", str(second.dir), "--detach", check=False, timeout_s=60)
    assert result.returncode == 1, result
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message, message
    assert f"gateway.port: port {first.gateway_port} on 127.0.0.1 is taken by the gateway of app 'cptest' " \
           f"in {first.dir}" in message, message
    assert f"lichen down {first.dir}" in message
    assert not second.workspace.controller_file.exists() and not second.marked_processes()
    assert len(first.replicas("Ready")) == 2  # the first app is untouched

    # `lichen up` again on the running first app: its own gateway holds the port, which is no conflict...
    assert "nothing changed" in first.up().stdout
    # ...but moving its gateway to a port another process holds is refused before anything is applied
    squatter = _listener_outside(low, low + 200)  # inside replica_ports the spec itself would be refused
    with squatter:
        taken = squatter.getsockname()[1]
        _edit(first, gateway={"port": taken})
        result = first.cli("up", str(first.dir), "--detach", check=False, timeout_s=60)
    assert result.returncode == 1 and f"gateway.port: port {taken} on 127.0.0.1 is taken by pid {os.getpid()} (" \
        in result.stderr and "nothing was applied" in result.stderr, result
    assert first.status()["gateway"]["port"] == first.gateway_port
