"""The replica-log rotation rule (lichen.control.log_retention): live logs stay, N newest stopped ones per service."""

from __future__ import annotations

from lichen.control.log_retention import ReplicaLog, logs_to_remove


def test_keeps_live_logs_and_the_newest_stopped_ones_per_service() -> None:
    logs = [ReplicaLog(f"api-aaaaa-{n}", "api", float(n)) for n in range(8)]
    logs += [ReplicaLog("web-bbbbb-0", "web", 0.0), ReplicaLog("web-bbbbb-1", "web", 1.0)]
    removed = logs_to_remove(logs, live={"api-aaaaa-0", "web-bbbbb-0"}, keep_dead=3)
    # api: 0 is live (oldest, still kept); of 1..7 stopped, 5, 6, 7 are the newest three
    assert removed == ["api-aaaaa-1", "api-aaaaa-2", "api-aaaaa-3", "api-aaaaa-4"]


def test_keep_zero_removes_every_stopped_log_and_ties_are_deterministic() -> None:
    logs = [ReplicaLog("api-aaaaa-1", "api", 5.0), ReplicaLog("api-aaaaa-2", "api", 5.0), ReplicaLog("api-aaaaa-3", "api", 5.0)]
    assert logs_to_remove(logs, live=(), keep_dead=0) == ["api-aaaaa-1", "api-aaaaa-2", "api-aaaaa-3"]
    assert logs_to_remove(logs, live=(), keep_dead=1) == ["api-aaaaa-1", "api-aaaaa-2"]
