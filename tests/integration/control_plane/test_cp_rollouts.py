"""Rolling updates through `lichen up` on a changed app, surviving a SIGKILLed controller."""

from __future__ import annotations

import os
import signal

import httpx
import psutil
import pytest
from cp_harness import FAST_PROBES, wait_until

pytestmark = pytest.mark.slow


def _spec(version: str, ready_delay_s: float = 0.0) -> dict:
    probes = {**FAST_PROBES, "readiness": {**FAST_PROBES["readiness"], "initial_delay_s": ready_delay_s}}
    return {
        "replicas": 2, "env": {"VERSION": version}, "probes": probes,
        "rollout": {"max_surge": 1, "max_unavailable": 0, "progress_deadline_s": 60},
    }


def test_controller_killed_mid_rollout_readopts_and_completes_without_orphans(make_app) -> None:
    app = make_app()
    app.write_spec(web=_spec("v1"))
    app.up()
    old = {r["id"]: r["pid"] for r in app.replicas("Ready")}
    old_revision = app.status()["services"]["web"]["revision"]
    app.write_spec(web=_spec("v2", ready_delay_s=1.0))  # new replicas take a while to become ready
    result = app.cli("up", str(app.dir), "--no-wait")
    assert "rolling update of web started" in result.stdout
    new_revision = app.status()["services"]["web"]["revision"]
    assert new_revision != old_revision
    wait_until(lambda: any(r["revision"] == new_revision for r in app.replicas()), "a new-revision replica")
    assert app.status()["services"]["web"]["rollout"]["status"] == "progressing"
    controller = app.controller_pid()
    os.kill(controller, signal.SIGKILL)
    wait_until(lambda: not psutil.pid_exists(controller) or psutil.Process(controller).status() == "zombie",
               "the controller to die")
    survivors = [p.pid for p in app.marked_processes(replicas_only=True)]
    assert survivors, "replicas must outlive their controller"

    app.up()  # takes over: re-adopts, then finishes the rollout
    final = app.status()
    ready = [r for r in final["replicas"] if r["state"] == "Ready"]
    assert len(final["replicas"]) == 2 and len(ready) == 2
    assert {r["revision"] for r in ready} == {new_revision}
    for r in ready:
        assert httpx.get(f"http://127.0.0.1:{r['port']}/whoami").json()["version"] == "v2"
    events = app.events("web")
    assert any(e["kind"] == "Adopted" for e in events)
    assert any(e["kind"] == "RolloutComplete" for e in events)
    # no orphan, no duplicate: the processes carrying this app's marker are exactly the replicas shown
    wait_until(lambda: sorted(p.pid for p in app.marked_processes(replicas_only=True)) == sorted(r["pid"] for r in ready),
               "old replicas to be gone")
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in old.values())
