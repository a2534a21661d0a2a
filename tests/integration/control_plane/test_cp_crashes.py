"""CrashLoopBackOff and OOMKilled with real processes."""

from __future__ import annotations

import pytest
from cp_harness import wait_until

pytestmark = pytest.mark.slow


def test_crash_on_start_backs_off_on_the_configured_schedule(make_app) -> None:
    app = make_app()
    schedule = {"initial_backoff_s": 0.3, "max_backoff_s": 30, "reset_after_s": 60}
    app.write_spec(web={"replicas": 1, "env": {"CRASH_ON_START": "1"}, "restart": schedule})
    app.up("--no-wait")
    events = wait_until(
        lambda: (evs := app.events("web")) and sum(e["kind"] == "Exited" for e in evs) >= 4 and evs,
        "four crashes",
    )
    exits = [e["at"] for e in events if e["kind"] == "Exited"]
    starts = [e["at"] for e in events if e["kind"] in ("Started", "Restarted")]
    gaps = [start - exit_at for exit_at, start in zip(exits, starts[1:], strict=False)]
    expected = [0.0, 0.3, 0.6]
    assert len(gaps) >= 3
    assert gaps[0] < 0.3, f"first restart not immediate: {gaps}"
    for gap, want in zip(gaps[1:3], expected[1:], strict=True):
        assert want - 0.05 <= gap <= want + 1.0, f"backoff gaps {gaps} vs {expected}"
    looping = wait_until(lambda: app.replicas("CrashLoopBackOff"), "CrashLoopBackOff in status")[0]
    assert looping["last_exit_code"] not in (None, 0)
    assert "configured to crash on start" in looping["log_tail"]
    shown = wait_until(
        lambda: "CrashLoopBackOff" in (out := app.cli("status", "-C", str(app.dir)).stdout) and out,
        "lichen status to show CrashLoopBackOff",
    )
    assert "CrashLoopBackOff" in shown and "configured to crash on start" in shown
    assert f"exit code {looping['last_exit_code']}" in shown
    assert any(e["kind"] == "CrashLoopBackOff" for e in app.events("web"))


def test_replica_over_its_memory_limit_is_reported_oomkilled(make_app) -> None:
    app = make_app()
    app.write_spec(web={
        "replicas": 1, "resources": {"memory": "300Mi"}, "env": {"HOG_MB": "600"},
        "restart": {"initial_backoff_s": 5, "max_backoff_s": 5},
    })
    app.up("--no-wait")
    oom = wait_until(lambda: [e for e in app.events("web") if e["kind"] == "OOMKilled"], "an OOMKilled event")[0]
    assert oom["reason"] == "OOMKilled"
    replica = wait_until(lambda: [r for r in app.replicas() if r["last_exit_reason"] == "OOMKilled"], "status")[0]
    assert replica["placement"]["memory_bytes"] == 300 * 2**20


def test_lichen_up_stops_waiting_on_a_crash_loop_and_shows_why(make_app) -> None:
    app = make_app()
    schedule = {"initial_backoff_s": 0.3, "max_backoff_s": 30, "reset_after_s": 60}
    app.write_spec(web={"replicas": 1, "env": {"CRASH_ON_START": "1"}, "restart": schedule})
    result = app.cli("up", str(app.dir), "--detach", "--timeout-s", "100", check=False)
    assert result.returncode != 0
    message = " ".join((result.stdout + result.stderr).split())
    assert "is in CrashLoopBackOff (Error, exit code" in message, message
    assert "configured to crash on start" in message  # the log line that says why, not the shutdown noise
    assert app.status()["pid"] == app.controller_pid()  # the controller keeps running (and retrying)


def test_a_daemon_start_that_loses_the_race_reports_the_running_controller(make_app, capsys) -> None:
    """Two 'lichen up --detach' at once: the one whose controller loses the per-app lock reports the winner."""
    from lichen.cli.controlling import _start_daemon

    app = make_app()
    app.write_spec(web={"replicas": 1})
    app.up()
    winner = app.controller_pid()
    _start_daemon(app.workspace, wait=True, timeout_s=60)  # what the second 'lichen up' does after the race
    printed = capsys.readouterr().out
    assert f"controller pid {winner} already runs" in printed and "ready: web 1/1" in printed, printed
    assert app.controller_pid() == winner and len(app.replicas("Ready")) == 1
