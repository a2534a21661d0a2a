"""Canary rollouts under a real `lichen up` with an open-loop load through the gateway: a revision that fails
30 % of its requests is aborted and drained while the stable revision keeps serving; an identical revision
steps through its weights and is promoted with no failed request; `lichen rollout` shows and steers it; an
alert rolls a bad rolling update back; a controller SIGKILLed mid-canary is replaced and resumes it."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from typing import Any

import psutil
import pytest
import yaml
from cp_harness import wait_until

from lichen.testing import OpenLoopLoad

pytestmark = pytest.mark.slow

ROLLOUT = {"strategy": "canary", "steps": [10, 50, 100],
           "analysis": {"interval_s": 2, "min_requests": 15, "max_error_ratio": 0.01}}


def write(app: Any, version: str, fail_ratio: float = 0.0) -> None:
    app.write_spec(api={"replicas": 2, "rollout": ROLLOUT, "env": {"VERSION": version, "FAIL_RATIO": str(fail_ratio)},
                        "routes": [{"prefix": "/api", "strip_prefix": True}]})


def events(app: Any, kind: str) -> list[dict[str, Any]]:
    return [e for e in app.events("api") if e["kind"] == kind]


def running_revisions(app: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for replica in app.replicas():
        if replica["state"] != "Terminating":
            counts[replica["revision"]] = counts.get(replica["revision"], 0) + 1
    return counts


def test_a_failing_canary_is_aborted_and_the_stable_revision_keeps_serving(make_app) -> None:
    app = make_app()
    write(app, "1")
    app.up()
    stable = app.status()["services"]["api"]["revision"]
    url = f"http://127.0.0.1:{app.gateway_port}/api/work"
    with OpenLoopLoad(url, rate_per_s=100, body={"text": "x"}) as load:
        wait_until(lambda: load.sent >= 50, "the load under way")
        write(app, "2", fail_ratio=0.3)
        app.up()
        (started,) = events(app, "CanaryStarted")  # events, not status: the abort may come before we look
        assert started["message"].endswith(f"beside {stable}, steps [10, 50, 100]"), started
        wait_until(lambda: events(app, "CanaryAborted"), "the abort", timeout_s=60)
        aborted_at = time.monotonic()
        sent_at_abort = load.sent
        wait_until(lambda: running_revisions(app) == {stable: 2}, "the canary drained", timeout_s=30)
        wait_until(lambda: load.sent >= sent_at_abort + 200, "two more seconds of load")
    (aborted,) = events(app, "CanaryAborted")
    assert f"rolled back to {stable}" in aborted["message"] and "error ratio" in aborted["message"], aborted
    assert app.status()["services"]["api"]["revision"] == stable
    failed = [f for f in load.failures if f.outcome == "500"]
    assert failed, "the canary was sent traffic"
    assert len(failed) < 0.05 * load.sent, f"{len(failed)} of {load.sent} failed"  # its 10 % share of 30 %, briefly
    last_failure = max(f.at_s for f in load.failures)
    assert load.started_mono + last_failure < aborted_at + 1.0  # nothing fails once the weight went to 0
    assert not events(app, "Killed")
    status = json.loads(app.cli("rollout", "status", "api", "--json").stdout)
    assert status["canary"] is None and status["last_analysis"]["verdict"] == "fail"


def test_an_identical_canary_is_promoted_with_no_failed_request(make_app) -> None:
    app = make_app()
    write(app, "1")
    app.up()
    stable = app.status()["services"]["api"]["revision"]
    url = f"http://127.0.0.1:{app.gateway_port}/api/work"
    with OpenLoopLoad(url, rate_per_s=100, body={"text": "x"}) as load:
        wait_until(lambda: load.sent >= 50, "the load under way")
        write(app, "2")
        app.up()
        canary = app.status()["services"]["api"]["revision"]
        shown = app.cli("rollout", "status", "api").stdout  # a slow machine may already be a step further
        assert re.search(rf"api: canary {canary} at (10|50|100)% \(step [123] of 3: 10 → 50 → 100\), stable "
                         rf"{stable}", shown) or "CanaryPromoted" in {e["kind"] for e in app.events("api")}, shown
        wait_until(lambda: events(app, "CanaryPromoted"), "the promotion", timeout_s=90)
        wait_until(lambda: running_revisions(app) == {canary: 2}, "the stable revision drained", timeout_s=30)
    steps = [e["message"].split(":")[0] for e in events(app, "CanaryStep")]
    assert steps == ["weight 10% → 50%", "weight 50% → 100%"], steps
    assert load.sent > 0 and load.failures == [], load.failures[:5]
    assert app.status()["services"]["api"]["revision"] == canary
    # steering by hand: a third revision, paused, then aborted
    write(app, "3")
    app.up()
    third = app.status()["services"]["api"]["revision"]
    paused = json.loads(app.cli("rollout", "pause", "api", "--json").stdout)
    assert paused["phase"] == "paused"
    refused = app.cli("up", str(app.dir), "--detach", check=False)
    assert refused.returncode == 0  # the same spec again: nothing to refuse
    abort = app.cli("rollout", "abort", "api", "--reason", "by the test")
    assert "aborted by hand" in abort.stdout and "by the test" in abort.stdout
    wait_until(lambda: running_revisions(app) == {canary: 2}, f"{third} drained", timeout_s=30)


ALERTS = """\
groups:
  - name: api
    rules:
      - alert: ApiErrors
        expr: sum by (service) (rate(lichen_requests_total{service="api",status="500"}[3s])) > 0.5
        for: 1s
        labels: {severity: page}
"""


def test_an_alert_rolls_a_bad_rolling_update_back(make_app) -> None:
    app = make_app()
    (app.dir / "rules").mkdir()
    (app.dir / "rules" / "api.yml").write_text(ALERTS)

    def write_rolling(version: str, fail_ratio: float) -> None:
        service = {"entrypoint": "ctlsvc:Probe", "replicas": 2, "termination_grace_s": 2,
                   "probes": {"readiness": {"period_s": 0.3, "timeout_s": 0.5, "failure_threshold": 1}},
                   "env": {"VERSION": version, "FAIL_RATIO": str(fail_ratio)},
                   "routes": [{"prefix": "/api", "strip_prefix": True}]}
        (app.dir / "lichen.yaml").write_text(yaml.safe_dump({
            "app": "remedy", "gateway": {"port": app.gateway_port},
            "observability": {"scrape_interval_s": 0.5, "scrape_timeout_s": 0.4, "evaluation_interval_s": 0.5,
                              "rules": ["rules/api.yml"]},
            "remediation": {"defaults": False, "rules": [
                {"alert": "ApiErrors", "action": "rollback", "within_s_of_rollout": 900}]},
            "services": {"api": service}}))

    write_rolling("1", 0.0)
    app.up()
    good = app.status()["services"]["api"]["revision"]
    url = f"http://127.0.0.1:{app.gateway_port}/api/work"
    with OpenLoopLoad(url, rate_per_s=50, body={"text": "x"}) as load:
        wait_until(lambda: load.sent >= 25, "the load under way")
        write_rolling("2", 0.5)
        app.up()
        # the new revision's name from its event: the rollback may already have happened when up returns
        (created,) = events(app, "RevisionCreated")
        bad = created["message"].split(" -> ")[1]
        wait_until(lambda: events(app, "RolloutRolledBack"), "the alert-driven rollback", timeout_s=60)
        wait_until(lambda: running_revisions(app) == {good: 2}, "the bad revision drained", timeout_s=30)
    (remedied,) = events(app, "Remediation")
    assert remedied["reason"] == "rollback" and remedied["message"].startswith("ApiErrors{")
    assert f"roll api back to revision {good}" in remedied["message"]
    (rolled,) = events(app, "RolloutRolledBack")
    assert rolled["message"].startswith(f"{bad} -> {good}: remediation: ApiErrors")
    assert app.status()["services"]["api"]["revision"] == good
    assert load.failures and all(f.outcome == "500" for f in load.failures)


def test_a_controller_killed_mid_canary_resumes_it_and_leaves_no_half_state(make_app) -> None:
    app = make_app()
    write(app, "1")
    app.up()
    stable = app.status()["services"]["api"]["revision"]
    url = f"http://127.0.0.1:{app.gateway_port}/api/work"
    with OpenLoopLoad(url, rate_per_s=100, body={"text": "x"}) as load:
        wait_until(lambda: load.sent >= 50, "the load under way")
        write(app, "2")
        app.up()
        canary = app.status()["services"]["api"]["revision"]
        controller = app.controller_pid()
        os.kill(controller, signal.SIGKILL)  # mid-rollout: the canary runs at 10 %
        wait_until(lambda: not psutil.pid_exists(controller) or psutil.Process(controller).status() == "zombie",
                   "the controller to die")
        app.up()  # a new controller adopts the replicas and the saved canary state
        status = app.status()["services"]["api"]
        assert status["revision"] == canary  # resumed (or, on a slow machine, already promoted)
        assert status["canary"] is None or status["canary"]["stable"] == stable
        wait_until(lambda: events(app, "CanaryPromoted"), "the resumed canary's promotion", timeout_s=90)
        wait_until(lambda: running_revisions(app) == {canary: 2}, "the stable revision drained", timeout_s=30)
    assert any(e["kind"] == "Adopted" for e in app.events("api"))
    assert len(events(app, "CanaryStarted")) == 1  # resumed, not started again
    assert load.failures == [], load.failures[:5]
    wait_until(lambda: len(app.marked_processes(replicas_only=True)) == 2, "no orphaned replica")
