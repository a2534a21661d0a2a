"""Self-healing with real `lichen serve` replicas under one real `lichen up --detach` controller.

The tests in this module share one app (two replicas) to keep the suite
fast, and run in file order: kill -9, hang, readiness flap, secrets and the
API token, then `lichen down`. Each picks a replica that has not failed
before, so every first restart is immediate.
"""

from __future__ import annotations

import os
import signal
import stat
import threading
import time
from collections.abc import Iterator

import httpx
import psutil
import pytest
from cp_harness import FAST_PROBES, App, wait_until

pytestmark = pytest.mark.slow
SECRET = "s3cr3t-value-that-must-not-leak"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    app = App(tmp_path_factory.mktemp("healing"))
    app.write_spec(web={"replicas": 2, "secrets": ["API_SECRET"]})
    (app.dir / ".lichen").mkdir(exist_ok=True)
    (app.dir / ".lichen" / "secrets.env").write_text(f"API_SECRET={SECRET}\n")
    app.up()
    yield app
    app.cli("down", str(app.dir), check=False)
    leftovers = app.marked_processes()
    for process in leftovers:
        process.kill()
    assert not leftovers, f"processes survived lichen down: {leftovers}"


def _events(app: App, kind: str, replica: str | None = None) -> list[dict]:
    return [e for e in app.events() if e["kind"] == kind and (replica is None or e["replica"] == replica)]


def _fresh_ready(app: App) -> dict:
    """A ready replica, one never restarted when there is one (a loaded machine may have restarted both)."""
    wait_until(lambda: len(app.replicas("Ready")) == 2, "both replicas ready")
    return min(app.replicas("Ready"), key=lambda r: r["restarts"])


def test_killed_replica_is_replaced_and_ready_again(app: App) -> None:
    victim = _fresh_ready(app)
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


def test_hung_replica_is_killed_within_the_liveness_budget_and_replaced(app: App) -> None:
    replica = _fresh_ready(app)
    liveness = FAST_PROBES["liveness"]
    budget_s = liveness["period_s"] * liveness["failure_threshold"] + liveness["timeout_s"]

    def hang() -> None:
        try:
            httpx.post(f"http://127.0.0.1:{replica['port']}/hang", timeout=0.5)
        except httpx.HTTPError:
            pass

    hung_at = time.time()
    threading.Thread(target=hang, daemon=True).start()
    def kills() -> list[dict]:  # this hang's kill, not an earlier one of the same replica
        return [e for e in _events(app, "Killed", replica["id"]) if e["at"] >= hung_at - 0.5]

    killed = wait_until(kills, "the liveness kill")[0]
    assert killed["reason"] == "LivenessFailed"
    detected_s = killed["at"] - hung_at
    # period x threshold + timeout, plus scheduling slack for a shared CI machine
    assert detected_s <= budget_s + 1.5, f"hang detected after {detected_s:.2f}s (budget {budget_s:.2f}s)"
    wait_until(lambda: not psutil.pid_exists(replica["pid"])
               or psutil.Process(replica["pid"]).status() == psutil.STATUS_ZOMBIE, "the hung process to die")
    wait_until(lambda: [r for r in app.replicas("Ready") if r["id"] == replica["id"] and r["pid"] != replica["pid"]],
               "a ready replacement")
    assert [e for e in _events(app, "Exited", replica["id"]) if e["at"] >= hung_at - 0.5][0]["reason"] == "LivenessFailed"


def test_readiness_flap_withdraws_then_restores_the_endpoints(app: App) -> None:
    wait_until(lambda: len(app.replicas("Ready")) == 2, "both replicas ready")
    before = {r["id"]: r["pid"] for r in app.replicas("Ready")}
    unready_events = len(_events(app, "Unready"))
    with app.client() as client:
        first = client.endpoints()
        assert sorted(e["replica"] for e in first["services"]["web"]) == sorted(before)
        (app.dir / "unready").touch()
        withdrawn = client.endpoints(version=first["version"], wait_s=10)
        assert withdrawn["version"] > first["version"]
        wait_until(lambda: not client.endpoints()["services"].get("web"), "the endpoints to be withdrawn")
        assert len(_events(app, "Unready")) >= unready_events + 2
        (app.dir / "unready").unlink()
        wait_until(lambda: len(client.endpoints()["services"].get("web", [])) == 2, "the endpoints to come back")
    assert {r["id"]: r["pid"] for r in app.replicas("Ready")} == before  # withheld from traffic, not restarted


def test_secrets_are_injected_never_stored_and_the_api_needs_the_token(app: App) -> None:
    replica = app.replicas("Ready")[0]
    assert httpx.get(f"http://127.0.0.1:{replica['port']}/whoami").json()["secret_seen"] is True
    assert stat.S_IMODE(app.workspace.token_path.stat().st_mode) == 0o600
    url = app.client().info["url"]
    assert httpx.get(f"{url}/v1/status").status_code == 401
    assert httpx.get(f"{url}/v1/status", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert "lichen_replicas" in httpx.get(f"{url}/metrics").text


def test_cli_scale_events_logs_and_status(app: App) -> None:
    import json

    assert "desired replicas 3" in app.cli("scale", "web", "3", "-C", str(app.dir)).stdout
    wait_until(lambda: len(app.replicas("Ready")) == 3, "a third ready replica")
    events = json.loads(app.cli("events", "--service", "web", "--json", "--limit", "500", "-C", str(app.dir)).stdout)
    assert any(e["kind"] == "Scaled" and e["message"] == "2 -> 3" for e in events)
    assert {e["service"] for e in events} == {"web"}
    logs = app.cli("logs", "web", "-n", "3", "-C", str(app.dir)).stdout.splitlines()
    assert logs and all(line.split(" | ")[0].startswith("web-") for line in logs)
    status = json.loads(app.cli("status", "--json", "-C", str(app.dir)).stdout)
    assert status["services"]["web"]["desired"] == 3
    assert status["enforcement"] in ("rlimit + affinity", "cgroup v2")
    table = app.cli("status", "-C", str(app.dir)).stdout
    assert "3/3" in table and "Ready" in table
    assert "no service named 'nope'" in app.cli("scale", "nope", "1", "-C", str(app.dir), check=False).stderr


def test_down_leaves_no_child_process_and_no_secret_on_disk(app: App) -> None:
    pids = [r["pid"] for r in app.replicas()] + [app.controller_pid()]
    result = app.cli("down", str(app.dir))
    assert f"stopped {len(pids) - 1} replica(s)" in result.stdout
    alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert alive == [] and app.marked_processes() == []
    assert not app.workspace.controller_file.exists()
    assert "nothing runs" in app.cli("down", str(app.dir)).stdout
    for path in (app.dir / ".lichen").rglob("*"):
        if path.is_file() and path.name != "secrets.env":
            assert SECRET.encode() not in path.read_bytes(), f"secret leaked into {path}"
