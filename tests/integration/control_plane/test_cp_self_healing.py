"""Self-healing with real `lichen serve` replicas under a real `lichen up --detach` controller."""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import psutil
import pytest
from cp_harness import FAST_PROBES, wait_until

pytestmark = pytest.mark.slow


def _events(app, kind: str, replica: str | None = None) -> list[dict]:
    return [e for e in app.events() if e["kind"] == kind and (replica is None or e["replica"] == replica)]


def test_killed_replica_is_replaced_and_ready_again(make_app) -> None:
    app = make_app()
    app.write_spec(web={"replicas": 2})
    app.up()
    before = app.replicas("Ready")
    assert len(before) == 2
    victim = before[0]
    os.kill(victim["pid"], signal.SIGKILL)

    def replaced() -> bool:
        ready = app.replicas("Ready")
        return len(ready) == 2 and any(r["id"] == victim["id"] and r["pid"] != victim["pid"] for r in ready)

    wait_until(replaced, "the killed replica to be replaced and ready")
    exits = _events(app, "Exited", victim["id"])
    assert exits and exits[0]["reason"] == "Killed" and "signal 9" in exits[0]["message"]
    assert _events(app, "Restarted", victim["id"])
    with app.client() as client:
        endpoints = client.endpoints()["services"]["web"]
    new = next(r for r in app.replicas() if r["id"] == victim["id"])
    assert {e["port"] for e in endpoints} == {r["port"] for r in app.replicas("Ready")}
    assert new["restarts"] == 1 and new["last_exit_reason"] == "Killed"
    assert httpx.get(f"http://127.0.0.1:{new['port']}/whoami").json()["replica"] == victim["id"]

    # lichen down drains and returns only when no child process is left
    pids = [r["pid"] for r in app.replicas()] + [app.controller_pid()]
    result = app.cli("down", str(app.dir))
    assert "stopped 2 replica(s)" in result.stdout
    alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert alive == [] and app.marked_processes() == []
    assert not app.workspace.controller_file.exists()
    assert "nothing runs" in app.cli("down", str(app.dir)).stdout


def test_hung_replica_is_killed_within_the_liveness_budget_and_replaced(make_app) -> None:
    app = make_app()
    app.write_spec(web={"replicas": 1})
    app.up()
    (replica,) = app.replicas("Ready")
    liveness = FAST_PROBES["liveness"]
    budget_s = liveness["period_s"] * liveness["failure_threshold"] + liveness["timeout_s"]

    def hang() -> None:
        try:
            httpx.post(f"http://127.0.0.1:{replica['port']}/hang", timeout=0.5)
        except httpx.HTTPError:
            pass

    hung_at = time.time()
    threading.Thread(target=hang, daemon=True).start()
    killed = wait_until(lambda: _events(app, "Killed", replica["id"]), "the liveness kill")[0]
    assert killed["reason"] == "LivenessFailed"
    detected_s = killed["at"] - hung_at
    # period x threshold + timeout, plus scheduling slack for a shared CI machine
    assert detected_s <= budget_s + 1.5, f"hang detected after {detected_s:.2f}s (budget {budget_s:.2f}s)"
    assert not psutil.pid_exists(replica["pid"]) or psutil.Process(replica["pid"]).status() == psutil.STATUS_ZOMBIE
    wait_until(lambda: [r for r in app.replicas("Ready") if r["pid"] != replica["pid"]], "a ready replacement")
    assert _events(app, "Exited", replica["id"])[0]["reason"] == "LivenessFailed"


def test_readiness_flap_withdraws_then_restores_the_endpoint(make_app) -> None:
    app = make_app()
    app.write_spec(web={"replicas": 1})
    app.up()
    (replica,) = app.replicas("Ready")
    with app.client() as client:
        first = client.endpoints()
        assert [e["replica"] for e in first["services"]["web"]] == [replica["id"]]
        (app.dir / "unready").touch()
        withdrawn = client.endpoints(version=first["version"], wait_s=10)
        wait_until(lambda: not client.endpoints()["services"].get("web"), "the endpoint to be withdrawn")
        assert withdrawn["version"] > first["version"]
        assert _events(app, "Unready", replica["id"])
        (app.dir / "unready").unlink()
        wait_until(lambda: client.endpoints()["services"].get("web"), "the endpoint to come back")
    after = app.replicas("Ready")
    assert [(r["id"], r["pid"]) for r in after] == [(replica["id"], replica["pid"])]  # not restarted
    assert len(_events(app, "Ready", replica["id"])) == 2
