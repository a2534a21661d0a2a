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
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lichen.errors import StateError

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


class StateStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
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
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    # ------------------------------------------------------------ desired
    def save_desired(self, service: str, revision: str, replicas: int, restart_nonce: int, rollout: dict | None) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO cp_desired (service, revision, replicas, restart_nonce, rollout_json) VALUES (?,?,?,?,?) "
                "ON CONFLICT(service) DO UPDATE SET revision=excluded.revision, replicas=excluded.replicas, "
                "restart_nonce=excluded.restart_nonce, rollout_json=excluded.rollout_json",
                (service, revision, replicas, restart_nonce, json.dumps(rollout) if rollout else None),
            )

    def delete_desired(self, service: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM cp_desired WHERE service=?", (service,))

    def desired(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT service, revision, replicas, restart_nonce, rollout_json FROM cp_desired")
            return {
                r[0]: {"revision": r[1], "replicas": r[2], "restart_nonce": r[3],
                       "rollout": json.loads(r[4]) if r[4] else None}
                for r in rows.fetchall()
            }

    def save_revision(self, service: str, revision: str, spec_json: str, code_digest: str, at: float) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO cp_revisions (revision, service, spec_json, code_digest, created_at) "
                "VALUES (?,?,?,?,?)",
                (revision, service, spec_json, code_digest, at),
            )

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
        with self._tx() as db:
            db.execute(
                f"INSERT OR REPLACE INTO cp_replicas ({names}) VALUES ({','.join('?' * len(columns))})",
                [data[c] for c in columns],
            )

    def delete_replica(self, replica_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM cp_replicas WHERE id=?", (replica_id,))

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
        with self._tx() as db:
            db.execute(
                "INSERT INTO cp_events (at, service, replica, kind, reason, message) VALUES (?,?,?,?,?,?)",
                (at, service, replica, kind, reason, message),
            )

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
        """Drop all but the newest ``keep`` events; returns how many went."""
        with self._tx() as db:
            cursor = db.execute("DELETE FROM cp_events WHERE id <= (SELECT MAX(id) FROM cp_events) - ?", (keep,))
            return cursor.rowcount
