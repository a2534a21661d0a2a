"""The control plane's SQLite state store (WAL mode).

Tables (all prefixed ``cp_`` so other modules can keep their own tables in
the same file):

* ``cp_desired``: per service, the desired revision, replica count, restart
  nonce and the rollout state;
* ``cp_revisions``: every revision ever applied with its service spec JSON
  and code digest (never secret values: only secret *names* are in a spec);
* ``cp_replicas``: one row per replica with pid, process start time, port,
  placement and crash-loop counters, so a restarted controller can re-adopt;
* ``cp_events``: the event log (started, ready, unready, killed, restarted...).

Each write is one transaction; ``busy_timeout`` lets several processes
(controller, CLI, the job runner) share the file.

**A full or failing disk stops no one.** A write that fails for want of
disk (SQLite's "database or disk is full", a disk I/O error, ENOSPC) is
rolled back whole, so nothing is half-written, logged, and kept in order in
memory to be written again: before the next write, and every second from
the controller (:meth:`StateStore.retry_pending`). Later writes of the same
row replace a waiting one (a replica's row, a service's desired state), so
what waits stays bounded by the rows and the events. Meanwhile the
controller carries on from its memory; reads see the file as it was. Any
other error is raised as before. ``faults`` (``lichen chaos``'s
``slow_disk`` and ``full_disk``, :mod:`lichen.control.disk_faults`) make
writes slow or fail here, without touching the real disk.
"""

from __future__ import annotations

import errno
import itertools
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lichen.control.disk_faults import DiskFault, disk_effect, live_faults
from lichen.errors import StateError
from lichen.logs import get_logger

log = get_logger("lichen.state")
MAX_PENDING_WRITES = 10_000
"""writes kept for a retry at most; past it the oldest waiting events are dropped (counted in ``dropped_writes``)"""
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EROFS})

SCHEMA = """
CREATE TABLE IF NOT EXISTS cp_desired (
    service TEXT PRIMARY KEY,
    revision TEXT NOT NULL,
    replicas INTEGER NOT NULL,
    restart_nonce INTEGER NOT NULL DEFAULT 0,
    rollout_json TEXT
);
CREATE TABLE IF NOT EXISTS cp_revisions (
    revision TEXT NOT NULL,
    service TEXT NOT NULL,
    spec_json TEXT NOT NULL,
    code_digest TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (service, revision)
);
CREATE TABLE IF NOT EXISTS cp_replicas (
    id TEXT PRIMARY KEY,
    service TEXT NOT NULL,
    revision TEXT NOT NULL,
    created_index INTEGER NOT NULL,
    phase TEXT NOT NULL,
    pid INTEGER,
    create_time REAL,
    port INTEGER,
    placement_json TEXT NOT NULL,
    crash_count INTEGER NOT NULL DEFAULT 0,
    restarts INTEGER NOT NULL DEFAULT 0,
    started_at REAL,
    exited_at REAL,
    last_exit_code INTEGER,
    last_exit_reason TEXT NOT NULL DEFAULT '',
    published INTEGER NOT NULL DEFAULT 0,
    stop_reason TEXT NOT NULL DEFAULT '',
    then_restart INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS cp_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    service TEXT NOT NULL,
    replica TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    message TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS cp_events_service ON cp_events (service, id);
"""


@dataclass
class ReplicaRecord:
    """A replica row; times are Unix epoch seconds."""

    id: str
    service: str
    revision: str
    created_index: int
    phase: str
    pid: int | None = None
    create_time: float | None = None
    port: int | None = None
    placement: dict[str, Any] = field(default_factory=dict)
    crash_count: int = 0
    restarts: int = 0
    started_at: float | None = None
    exited_at: float | None = None
    last_exit_code: int | None = None
    last_exit_reason: str = ""
    published: bool = False
    stop_reason: str = ""
    then_restart: bool = False


@dataclass(frozen=True)
class Event:
    id: int
    at: float
    service: str
    replica: str
    kind: str
    reason: str
    message: str


def sqlite_path(state_url: str, app_dir: Path) -> Path:
    """The database file of ``sqlite:///relative/or/absolute.db`` (relative to the app dir)."""
    if not state_url.startswith("sqlite:///"):
        raise StateError(f"state.url: only sqlite:/// URLs are supported, got {state_url!r}")
    raw = state_url[len("sqlite:///") :]
    path = Path(raw)
    return path if path.is_absolute() else app_dir / path


def disk_trouble(exc: BaseException) -> bool:
    """A write that failed for want of disk (to be retried), not a bug or a corrupt file (to be raised)."""
    if isinstance(exc, OSError):
        return exc.errno in DISK_ERRNOS
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        return "disk is full" in text or "disk i/o error" in text or "readonly database" in text
    return False


Statement = Callable[[sqlite3.Connection], Any]


class StateStore:
    def __init__(self, path: Path, wall: Callable[[], float] = time.time) -> None:
        self.path = path
        self.wall = wall
        self._lock = threading.Lock()
        self.faults: list[DiskFault] = []
        """``slow_disk``/``full_disk`` faults of ``lichen chaos`` (:mod:`lichen.control.disk_faults`)"""
        self._pending: dict[tuple[Any, ...], Statement] = {}
        """writes that failed for want of disk, oldest first, by the row they write"""
        self._event_ids = itertools.count()
        self.failed_writes = 0
        self.delayed_writes = 0
        self.dropped_writes = 0
        self.last_error = ""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), timeout=10.0, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA busy_timeout=10000")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise StateError(f"cannot open the state store: {exc}", where=str(path)) from None

    def close(self) -> None:
        with self._lock:
            if self._pending:
                self._flush_locked()
                if self._pending:
                    log.error("state_writes_lost", pending=len(self._pending), error=self.last_error)
            self._db.close()

    # ------------------------------------------------------------ writing
    def _run_locked(self, statement: Statement) -> Any:
        """One transaction, under the lock; a disk fault of ``lichen chaos`` slows it or fails it after its
        statements ran (so it is rolled back, as on a real full disk)."""
        effect = disk_effect(self.faults, self.wall()) if self.faults else None
        if effect is not None and effect.delay_s:
            self.delayed_writes += 1
            time.sleep(effect.delay_s)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            result = statement(self._db)
            if effect is not None and effect.full:
                raise OSError(errno.ENOSPC, "No space left on device (full_disk: fault injected by lichen chaos)")
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:  # SQLite rolls back itself on some errors, SQLITE_FULL among them
                self._db.execute("ROLLBACK")
            raise
        return result

    def _write(self, key: tuple[Any, ...], statement: Statement, default: Any = None) -> Any:
        """Write now, or, when writes wait or this one fails for want of disk, keep it (in order) for a retry."""
        with self._lock:
            self._pending.pop(key, None)  # a later write of the same row replaces a waiting one
            if self._pending:
                self._keep(key, statement)
                self._flush_locked()
                return default
            try:
                return self._run_locked(statement)
            except Exception as exc:
                if not disk_trouble(exc):
                    raise
                self._failed(exc)
                self._keep(key, statement)
                return default

    def _keep(self, key: tuple[Any, ...], statement: Statement) -> None:
        self._pending[key] = statement
        while len(self._pending) > MAX_PENDING_WRITES:
            oldest = next((k for k in self._pending if k[0] == "event"), next(iter(self._pending)))
            del self._pending[oldest]
            self.dropped_writes += 1

    def _failed(self, exc: BaseException) -> None:
        self.failed_writes += 1
        first = not self._pending
        self.last_error = f"{type(exc).__name__}: {exc}"
        if first or self.failed_writes % 50 == 0:
            log.error("state_write_failed", error=self.last_error, pending=len(self._pending) + 1,
                      failed=self.failed_writes, path=str(self.path))

    def _flush_locked(self) -> None:
        written = 0
        while self._pending:
            key, statement = next(iter(self._pending.items()))
            try:
                self._run_locked(statement)
                written += 1
            except Exception as exc:
                if disk_trouble(exc):
                    self._failed(exc)
                    return
                log.exception("state_write_dropped", write=key[0])  # not the disk: it would fail every time
                self.dropped_writes += 1
            del self._pending[key]
        if written:
            log.info("state_writes_recovered", written=written, failed=self.failed_writes)

    def retry_pending(self) -> None:
        """Write what waits (the controller calls this every second)."""
        if self._pending:
            with self._lock:
                self._flush_locked()

    def health(self) -> dict[str, Any]:
        """Writes waiting for the disk, failed and dropped so far, the last error and the live disk faults."""
        now = self.wall()
        return {"path": str(self.path), "pending_writes": len(self._pending), "failed_writes": self.failed_writes,
                "delayed_writes": self.delayed_writes, "dropped_writes": self.dropped_writes,
                "last_error": self.last_error,
                "faults": [{"kind": f.kind, "delay_ms": f.delay_ms, "until_wall": f.until_wall}
                           for f in live_faults(self.faults, now)]}

    # ------------------------------------------------------------ desired
    def save_desired(self, service: str, revision: str, replicas: int, restart_nonce: int, rollout: dict | None) -> None:
        row = (service, revision, replicas, restart_nonce, json.dumps(rollout) if rollout else None)
        self._write(("desired", service), lambda db: db.execute(
            "INSERT INTO cp_desired (service, revision, replicas, restart_nonce, rollout_json) VALUES (?,?,?,?,?) "
            "ON CONFLICT(service) DO UPDATE SET revision=excluded.revision, replicas=excluded.replicas, "
            "restart_nonce=excluded.restart_nonce, rollout_json=excluded.rollout_json", row))

    def delete_desired(self, service: str) -> None:
        self._write(("desired", service), lambda db: db.execute("DELETE FROM cp_desired WHERE service=?", (service,)))

    def desired(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT service, revision, replicas, restart_nonce, rollout_json FROM cp_desired")
            return {
                r[0]: {"revision": r[1], "replicas": r[2], "restart_nonce": r[3],
                       "rollout": json.loads(r[4]) if r[4] else None}
                for r in rows.fetchall()
            }

    def save_revision(self, service: str, revision: str, spec_json: str, code_digest: str, at: float) -> None:
        self._write(("revision", service, revision), lambda db: db.execute(
            "INSERT OR IGNORE INTO cp_revisions (revision, service, spec_json, code_digest, created_at) "
            "VALUES (?,?,?,?,?)", (revision, service, spec_json, code_digest, at)))

    def revision_spec(self, service: str, revision: str) -> tuple[str, str] | None:
        """(spec JSON, code digest) of a revision."""
        with self._lock:
            row = self._db.execute(
                "SELECT spec_json, code_digest FROM cp_revisions WHERE service=? AND revision=?", (service, revision)
            ).fetchone()
        return (row[0], row[1]) if row else None

    # ----------------------------------------------------------- replicas
    def save_replica(self, record: ReplicaRecord) -> None:
        data = asdict(record)
        data["placement"] = json.dumps(record.placement)
        columns = list(data)
        names = ",".join("placement_json" if c == "placement" else c for c in columns)
        values = [data[c] for c in columns]  # the row as it is now, also when it is written later
        self._write(("replica", record.id), lambda db: db.execute(
            f"INSERT OR REPLACE INTO cp_replicas ({names}) VALUES ({','.join('?' * len(columns))})", values))

    def delete_replica(self, replica_id: str) -> None:
        self._write(("replica", replica_id),
                    lambda db: db.execute("DELETE FROM cp_replicas WHERE id=?", (replica_id,)))

    def replicas(self) -> list[ReplicaRecord]:
        with self._lock:
            cursor = self._db.execute("SELECT * FROM cp_replicas ORDER BY service, created_index")
            names = [d[0] for d in cursor.description]
            rows = cursor.fetchall()
        records = []
        for row in rows:
            data = dict(zip(names, row, strict=True))
            data["placement"] = json.loads(data.pop("placement_json"))
            data["published"] = bool(data["published"])
            data["then_restart"] = bool(data["then_restart"])
            records.append(ReplicaRecord(**data))
        return records

    # ------------------------------------------------------------- events
    def add_event(self, at: float, service: str, kind: str, reason: str = "", message: str = "",
                  replica: str = "") -> None:
        self._write(("event", next(self._event_ids)), lambda db: db.execute(
            "INSERT INTO cp_events (at, service, replica, kind, reason, message) VALUES (?,?,?,?,?,?)",
            (at, service, replica, kind, reason, message)))

    def events(self, service: str | None = None, limit: int = 100, after_id: int = 0) -> list[Event]:
        query = "SELECT id, at, service, replica, kind, reason, message FROM cp_events WHERE id > ?"
        params: list[Any] = [after_id]
        if service:
            query += " AND service = ?"
            params.append(service)
        query += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        with self._lock:
            rows = self._db.execute(query, params).fetchall()
        return [Event(*row) for row in reversed(rows)]

    def prune_events(self, keep: int) -> int:
        """Drop all but the newest ``keep`` events; returns how many went (0 when it waits for the disk)."""
        return self._write(("prune",), lambda db: db.execute(
            "DELETE FROM cp_events WHERE id <= (SELECT MAX(id) FROM cp_events) - ?", (keep,)).rowcount, default=0)
