"""The gateway under `lichen up`: the app's single entry point, with real replicas, controller and gateway processes.

One app (two services with routes, the gateway on a free port) goes through:
routing to both services; `lichen scale` (the new replica gets traffic through
the gateway); kill -9 of a replica, then a rolling restart, under steady load
(no failed client request); kill -9 of the gateway (restarted, serves again); kill -9 of the
controller (the new one re-adopts the running gateway); `lichen down` (no
process left).
"""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from typing import Any

import httpx
import psutil
import pytest
import yaml
from cp_harness import FAST_PROBES, wait_until
from waiting import free_port

pytestmark = pytest.mark.slow


def write_spec(app: Any, port: int) -> None:
    service = {"entrypoint": "ctlsvc:Probe", "termination_grace_s": 2, "probes": FAST_PROBES}
    spec = {
        "app": "gwtest",
        "gateway": {"port": port},
        "services": {
            "web": {**service, "replicas": 2, "routes": [{"prefix": "/web", "strip_prefix": True}]},
            "api": {**service, "replicas": 1, "routes": [{"prefix": "/api", "strip_prefix": True}]},
        },
    }
    (app.dir / "lichen.yaml").write_text(yaml.safe_dump(spec))


class Load:
    """Steady GET traffic through the gateway from a few keep-alive clients; counts every outcome."""

    def __init__(self, url: str, clients: int = 3) -> None:
        self.url = url
        self.ok = 0
        self.failures: list[str] = []
        self.replicas: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self) -> None:
        with httpx.Client(timeout=10.0) as client:
            while not self._stop.is_set():
                replica, failure = None, None
                try:
                    response = client.get(self.url)
                    if response.status_code == 200:
                        replica = response.json()["replica"]
                    else:
                        failure = f"status {response.status_code}: {response.text[:200]}"
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    failure = f"{type(exc).__name__}: {exc}"
                with self._lock:
                    if failure is None:
                        self.ok += 1
                        self.replicas[str(replica)] += 1
                    else:
                        self.failures.append(failure)

    @property
    def total(self) -> int:
        with self._lock:
            return self.ok + len(self.failures)


def whoami(url: str) -> dict[str, Any] | None:
    try:
        response = httpx.get(url, timeout=5.0)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


def test_lichen_up_serves_the_app_through_its_supervised_gateway(make_app) -> None:
    app = make_app()
    port = free_port()
    write_spec(app, port)
    gateway_url = f"http://127.0.0.1:{port}"

    result = app.up()
    assert f"gateway: {gateway_url}" in result.stdout, result.stdout
    state = app.status()
    gateway = state["gateway"]
    assert gateway["state"] == "Ready" and gateway["url"] == gateway_url and gateway["upstreams"] == 3
    text = app.cli("status", "-C", str(app.dir)).stdout
    assert gateway_url in text and "gateway" in text
    logs = app.cli("logs", "gateway", "-C", str(app.dir)).stdout
    assert '"event": "listening"' in logs and f'"port": {port}' in logs, logs

    # -- routes reach both services; every ready web replica answers through the gateway
    ready = {r["id"]: r for r in app.replicas("Ready")}
    api = whoami(f"{gateway_url}/api/whoami")
    assert api is not None and ready[api["replica"]]["service"] == "api"
    web_ids = {r for r, v in ready.items() if v["service"] == "web"}
    seen: set[str] = set()
    wait_until(lambda: seen.add((whoami(f"{gateway_url}/web/whoami") or {}).get("replica", "")) or seen >= web_ids,
               "both web replicas to answer through the gateway", 30)
    unknown = httpx.get(f"{gateway_url}/nowhere", timeout=5.0)
    assert unknown.status_code == 404 and {r["prefix"] for r in unknown.json()["routes"]} == {"/web", "/api"}

    # -- lichen scale: the new replica gets traffic through the gateway
    app.cli("scale", "web", "3", "-C", str(app.dir))
    new_ids = wait_until(lambda: {r["id"] for r in app.replicas("Ready") if r["service"] == "web"} - web_ids,
                         "a third ready web replica")
    wait_until(lambda: (whoami(f"{gateway_url}/web/whoami") or {}).get("replica") in new_ids,
               "the scaled-up replica to answer through the gateway", 30)

    # -- kill -9 a replica under steady load: no client sees a failure
    victim = next(r for r in app.replicas("Ready") if r["service"] == "web")
    with Load(f"{gateway_url}/web/whoami") as load:
        wait_until(lambda: load.total >= 100, "traffic before the kill", 60)
        os.kill(victim["pid"], signal.SIGKILL)
        killed_at = load.total
        wait_until(lambda: any(r["id"] == victim["id"] and r["pid"] != victim["pid"] for r in app.replicas("Ready")),
                   "the killed replica to be replaced and ready")
        wait_until(lambda: load.total >= killed_at + 200, "traffic after the replacement", 60)
        # a rolling restart under the same load: traffic moves to the new revision, nothing fails
        old_revision = app.status()["services"]["web"]["revision"]
        new_revision = app.cli("restart", "web", "-C", str(app.dir)).stdout.split()[-1]
        assert new_revision != old_revision
        wait_until(lambda: (app.status()["services"]["web"].get("rollout") or {}).get("status") == "complete"
                   and all(r["revision"] == new_revision for r in app.replicas() if r["service"] == "web"),
                   "the rolling restart to complete", 90)
        rolled_at = load.total
        wait_until(lambda: load.total >= rolled_at + 50, "traffic after the rollout", 60)
    assert load.failures == [], f"{len(load.failures)} failed of {load.total}: {load.failures[:5]}"
    assert len(load.replicas) >= 6, load.replicas  # three replicas of each revision

    # -- kill -9 the gateway: it is restarted and serves again
    old = app.status()["gateway"]
    os.kill(old["pid"], signal.SIGKILL)
    fresh = wait_until(lambda: (lambda g: g if g["pid"] not in (None, old["pid"]) and g["state"] == "Ready" else None)(
        app.status()["gateway"]), "the gateway to be restarted and ready")
    assert fresh["restarts"] == old["restarts"] + 1 and fresh["last_exit_code"] == -9
    assert whoami(f"{gateway_url}/api/whoami") is not None

    # -- kill -9 the controller: the next one re-adopts the running gateway (no second gateway, no orphan)
    os.kill(app.controller_pid(), signal.SIGKILL)
    app.up()
    adopted = app.status()["gateway"]
    assert adopted["pid"] == fresh["pid"], (adopted, fresh)
    assert any(e["kind"] == "Adopted" for e in app.events("gateway"))
    gateways = [p for p in app.marked_processes() if "gateway" in p.cmdline()]
    assert [p.pid for p in gateways] == [fresh["pid"]]
    assert whoami(f"{gateway_url}/web/whoami") is not None

    # -- lichen down: the gateway is drained and stopped with everything else
    app.cli("down", str(app.dir))
    assert app.marked_processes() == []
    assert not psutil.pid_exists(fresh["pid"]) or psutil.Process(fresh["pid"]).status() == psutil.STATUS_ZOMBIE
