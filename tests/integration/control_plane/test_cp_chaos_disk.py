"""`lichen chaos`'s slow_disk and full_disk on a real app under `lichen up`: every write of the controller's state
store fails (ENOSPC, rolled back) or waits while a replica is killed under load; the data plane keeps serving
(no failed request), the controller carries on from memory, logs the trouble, retries, and once the fault lifts
the file holds exactly what the controller knows, intact. An interrupted run clears the fault."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess

import pytest
import yaml
from cp_harness import FAST_PROBES, LICHEN, wait_until

pytestmark = pytest.mark.slow


def _app(make_app):
    app = make_app()
    service = {"entrypoint": "ctlsvc:Probe", "termination_grace_s": 2, "probes": FAST_PROBES, "replicas": 2,
               "routes": [{"prefix": "/web", "strip_prefix": True}]}
    (app.dir / "lichen.yaml").write_text(yaml.safe_dump({"app": "chaosdisk", "gateway": {"port": app.gateway_port},
                                                         "services": {"web": service}}))
    app.up()
    return app


def _chaos(app, faults: list[dict], duration: str) -> tuple[int, dict]:
    path = app.dir / "experiment.yaml"
    path.write_text(yaml.safe_dump({"name": "disk", "load": {"route": "/web/whoami", "rate": 50},
                                    "duration": duration, "faults": faults,
                                    "hypotheses": ["failed requests == 0", "recovered within 30s"]}))
    done = app.cli("chaos", str(app.dir), str(path), "--json", check=False, timeout_s=180)
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def _rows(app, sql: str) -> list[tuple]:
    with sqlite3.connect(app.dir / ".lichen" / "state.db") as db:
        return db.execute(sql).fetchall()


def _state_matches_memory(app) -> bool:
    """The file holds exactly the replicas the controller runs."""
    live = sorted(r["id"] for r in app.replicas())
    return live == sorted(row[0] for row in _rows(app, "SELECT id FROM cp_replicas"))


@pytest.mark.parametrize("disk", [{"kind": "full_disk"}, {"kind": "slow_disk", "delay_ms": 100}],
                         ids=["full", "slow"])
def test_a_replica_killed_while_the_disk_is_full_or_slow_is_replaced_and_the_state_catches_up(make_app,
                                                                                             disk: dict) -> None:
    app = _app(make_app)
    controller = app.controller_pid()
    code, report = _chaos(app, [{**disk, "at": "1s", "for_s": "4s"},
                                {"kind": "kill_replica", "service": "web", "at": "2s"}], "10s")
    disk_fault, kill = report["faults"]
    assert report["load"]["answered"] == report["load"]["scheduled"] == 500 and kill["failed"] == 0, report
    assert kill["recovered_s"] is not None and disk_fault["recovered_s"] is not None
    assert disk_fault["recovered_s"] >= 4.0, disk_fault  # not before it lifted
    store = report["state_store"]
    assert store["pending_writes"] == 0 and store["faults"] == [] and store["dropped_writes"] == 0, store
    if disk["kind"] == "full_disk":
        assert store["failed_writes"] >= 2 and "No space left on device" in store["last_error"], store
    else:
        assert store["delayed_writes"] >= 2 and store["failed_writes"] == 0, store
    assert code == 0 and report["held"], report
    assert app.controller_pid() == controller  # it carried on, never crashed
    wait_until(lambda: _state_matches_memory(app), "the state file to hold the controller's replicas")
    assert _rows(app, "PRAGMA integrity_check") == [("ok",)]
    # what happened while writes failed reached the file afterwards, in order
    exited = [e for e in app.events("web") if e["kind"] == "Exited" and e["replica"] == kill["target"]]
    assert exited, app.events("web")
    log = (app.dir / ".lichen" / "logs" / "controller.log").read_text()
    if disk["kind"] == "full_disk":
        assert "state_write_failed" in log and "state_writes_recovered" in log


def test_an_interrupted_run_clears_the_disk_fault_and_the_writes_catch_up(make_app) -> None:
    app = _app(make_app)
    path = app.dir / "experiment.yaml"
    path.write_text(yaml.safe_dump({"name": "disk", "load": {"route": "/web/whoami", "rate": 20}, "duration": "70s",
                                    "faults": [{"kind": "full_disk", "at": "500ms", "for_s": "60s"},
                                               {"kind": "kill_replica", "service": "web", "at": "1s"}]}))
    process = subprocess.Popen([*LICHEN, "chaos", str(app.dir), str(path)], cwd=app.dir, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)

    def state() -> dict:
        with app.client() as client:
            return client.state_store()

    wait_until(lambda: state()["pending_writes"] > 0, "a state write held back by the full disk", timeout_s=30)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and "cleared the state store's disk faults" in err, err
    assert state()["faults"] == []
    wait_until(lambda: state()["pending_writes"] == 0 and _state_matches_memory(app), "the writes to catch up")
