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
