"""The state store under a full or slow disk: a failed write is rolled back whole, kept in order and written again
once the disk has room; anything that is not the disk is still raised. Real SQLite files throughout: a real
"database or disk is full" comes from ``PRAGMA max_page_count``, the injected one from a ``full_disk`` fault."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from lichen.control.disk_faults import DiskFault
from lichen.runtime import state as state_module
from lichen.runtime.state import ReplicaRecord, StateStore, disk_trouble


class Wall:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _rows(path: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


def test_a_full_disk_holds_writes_back_whole_and_in_order_until_it_has_room(tmp_path: Path) -> None:
    wall = Wall()
    store = StateStore(tmp_path / "state.db", wall=wall)
    store.save_replica(ReplicaRecord("web-1", "web", "r1", 1, "running", pid=10))
    store.faults = [DiskFault("full", until_wall=wall.now + 5)]
    store.save_replica(ReplicaRecord("web-1", "web", "r1", 1, "exited", pid=10))
    store.add_event(wall.now, "web", "Exited", replica="web-1")
    store.save_replica(ReplicaRecord("web-2", "web", "r1", 2, "running", pid=11))
    store.add_event(wall.now, "web", "Started", replica="web-2")
    store.delete_replica("web-1")  # replaces web-1's waiting row
    health = store.health()
    assert health["pending_writes"] == 4 and health["failed_writes"] >= 1 and "No space left" in health["last_error"]
    assert health["faults"] == [{"kind": "full", "delay_ms": 0.0, "until_wall": 1005.0}]
    # nothing of it reached the file: every failed transaction was rolled back
    assert _rows(tmp_path / "state.db", "SELECT id, phase FROM cp_replicas") == [("web-1", "running")]
    assert _rows(tmp_path / "state.db", "SELECT kind FROM cp_events") == []
    store.retry_pending()
    assert store.health()["pending_writes"] == 4  # still full
    wall.now += 10  # the fault has ended by itself
    store.retry_pending()
    assert store.health()["pending_writes"] == 0 and store.health()["faults"] == []
    assert _rows(tmp_path / "state.db", "SELECT id, phase FROM cp_replicas") == [("web-2", "running")]
    assert [e.kind for e in store.events()] == ["Exited", "Started"]
    assert _rows(tmp_path / "state.db", "PRAGMA integrity_check") == [("ok",)]


def test_a_write_after_the_disk_has_room_first_writes_what_waits(tmp_path: Path) -> None:
    wall = Wall()
    store = StateStore(tmp_path / "state.db", wall=wall)
    store.faults = [DiskFault("full", until_wall=wall.now + 1)]
    store.add_event(wall.now, "web", "First")
    assert store.prune_events(keep=100) == 0  # waits too
    wall.now += 2
    store.add_event(wall.now, "web", "Second")
    assert [e.kind for e in store.events()] == ["First", "Second"] and store.health()["pending_writes"] == 0


def test_a_real_sqlite_full_database_is_retried_too(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count={pages}")  # SQLite's own SQLITE_FULL, no disk filled
    for i in range(200):
        store.add_event(float(i), "web", "Tick", message="x" * 500)
    health = store.health()
    assert health["pending_writes"] > 0 and "database or disk is full" in health["last_error"]
    store._db.execute(f"PRAGMA max_page_count={pages + 1000}")
    store.retry_pending()
    assert store.health()["pending_writes"] == 0
    assert [e.message for e in store.events(limit=1000)] == ["x" * 500] * 200


def test_a_slow_disk_delays_each_write_and_writes_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(state_module.time, "sleep", slept.append)
    wall = Wall()
    store = StateStore(tmp_path / "state.db", wall=wall)
    store.faults = [DiskFault("slow", until_wall=wall.now + 5, delay_ms=250)]
    store.add_event(wall.now, "web", "Slow")
    wall.now += 6
    store.add_event(wall.now, "web", "Fast")
    assert slept == [0.25] and [e.kind for e in store.events()] == ["Slow", "Fast"]
    assert store.health()["delayed_writes"] == 1 and store.health()["failed_writes"] == 0


def test_only_disk_trouble_is_held_back_anything_else_is_raised(tmp_path: Path) -> None:
    import errno

    assert disk_trouble(OSError(errno.ENOSPC, "full")) and disk_trouble(sqlite3.OperationalError("disk I/O error"))
    assert not disk_trouble(OSError(errno.EACCES, "denied"))
    assert not disk_trouble(sqlite3.OperationalError("no such table: x"))
    store = StateStore(tmp_path / "state.db")
    store._db.execute("DROP TABLE cp_events")
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        store.add_event(1.0, "web", "Lost")
    assert store.health()["pending_writes"] == 0
