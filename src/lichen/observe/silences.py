"""Silences kept in the controller's SQLite state database.

``lichen silence add|list|expire`` and the notifier share one table,
``silences``, in the file named by ``spec.state.url``; the notifier reads the
silences that are not expired on every cycle, so a silence added from the CLI
takes effect at the next cycle even while the controller runs. The decision
of whether a silence mutes an alert is pure (``lichen.control.notifying``).

``SilenceStore(":memory:")`` is the in-memory twin for tests.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path

from lichen.control.notifying import Matcher, Silence, matches_all, parse_matcher
from lichen.errors import ConfigError, StateError

BUSY_TIMEOUT_MS = 5000


def state_db_path(url: str, base_dir: str | Path = ".") -> str:
    """The file behind ``spec.state.url`` (``sqlite:///rel/path`` or ``sqlite:////abs/path``).

    A relative path is relative to ``base_dir`` (the directory of ``lichen.yaml``).
    """
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise ConfigError(f"state.url: expected sqlite:///PATH, got {url!r}")
    rest = url[len(prefix) :]
    if rest == ":memory:":
        return rest
    path = Path(rest)
    return str(path if path.is_absolute() else Path(base_dir) / path)


def connect_state_db(path: str | Path) -> sqlite3.Connection:
    """Open the shared state database: WAL journal and a busy timeout, autocommit off."""
    path = str(path)
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        if path != ":memory:":
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.Error as exc:
        raise StateError(f"cannot open the state database: {exc}", where=path) from None
    return conn


class SilenceStore:
    """CRUD for silences; every write is one SQLite transaction."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._conn = connect_state_db(self.path)
        self._lock = threading.Lock()
        with self._lock:
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS silences ("
                " id TEXT PRIMARY KEY, matchers TEXT NOT NULL, starts_at REAL NOT NULL, ends_at REAL NOT NULL,"
                " created_by TEXT NOT NULL DEFAULT '', comment TEXT NOT NULL DEFAULT '', updated_at REAL NOT NULL)"
            )
            self._conn.execute("CREATE INDEX IF NOT EXISTS silences_ends_at ON silences(ends_at)")

    def close(self) -> None:
        self._conn.close()

    def add(
        self,
        matchers: Sequence[Matcher | str],
        *,
        starts_at: float,
        ends_at: float,
        created_by: str = "",
        comment: str = "",
    ) -> Silence:
        """Create a silence; matchers may be strings such as ``service=~"api|web"``."""
        try:
            parsed = tuple(m if isinstance(m, Matcher) else parse_matcher(m) for m in matchers)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if not parsed:
            raise ConfigError("a silence needs at least one matcher, e.g. alertname=ReplicaDown")
        if matches_all(parsed, {}):
            raise ConfigError("these matchers match every alert (each matches an empty label); add one that names a value")
        if ends_at <= starts_at:
            raise ConfigError("a silence must end after it starts")
        silence = Silence(str(uuid.uuid4()), parsed, float(starts_at), float(ends_at), created_by, comment)
        with self._lock:
            self._conn.execute(
                "INSERT INTO silences (id, matchers, starts_at, ends_at, created_by, comment, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    silence.id,
                    json.dumps([m.to_dict() for m in parsed]),
                    silence.starts_at,
                    silence.ends_at,
                    created_by,
                    comment,
                    silence.starts_at,
                ),
            )
        return silence

    def get(self, silence_id: str) -> Silence:
        with self._lock:
            rows = self._conn.execute("SELECT * FROM silences WHERE id LIKE ? || '%'", (silence_id,)).fetchall()
        if not rows:
            raise StateError(f"no silence with id {silence_id!r}")
        if len(rows) > 1:
            raise ConfigError(f"silence id prefix {silence_id!r} is ambiguous ({len(rows)} silences)")
        return _silence(rows[0])

    def list(self, now: float | None = None, *, include_expired: bool = True) -> list[Silence]:
        """All silences by start time; with ``include_expired=False`` only those not yet ended at ``now``."""
        with self._lock:
            if include_expired or now is None:
                rows = self._conn.execute("SELECT * FROM silences ORDER BY starts_at, id").fetchall()
            else:
                rows = self._conn.execute(
                    "SELECT * FROM silences WHERE ends_at > ? ORDER BY starts_at, id", (now,)
                ).fetchall()
        return [_silence(r) for r in rows]

    def current(self, now: float) -> list[Silence]:
        """Silences that are pending or active at ``now`` (what the notifier needs)."""
        return self.list(now, include_expired=False)

    def expire(self, silence_id: str, now: float) -> Silence:
        """End a silence at ``now``; an id prefix is enough when unambiguous."""
        silence = self.get(silence_id)
        if silence.state(now) == "expired":
            raise StateError(f"silence {silence.id} already expired")
        with self._lock:
            self._conn.execute(
                "UPDATE silences SET ends_at = ?, starts_at = MIN(starts_at, ?), updated_at = ? WHERE id = ?",
                (now, now, now, silence.id),
            )
        return self.get(silence.id)


def _silence(row: tuple) -> Silence:
    sid, matchers, starts_at, ends_at, created_by, comment, _updated = row
    return Silence(
        id=sid,
        matchers=tuple(Matcher.from_dict(m) for m in json.loads(matchers)),
        starts_at=starts_at,
        ends_at=ends_at,
        created_by=created_by,
        comment=comment,
    )


def silence_to_dict(silence: Silence, now: float) -> dict[str, object]:
    """A silence as the CLI's ``--json`` prints it (Alertmanager-like field names)."""
    return {
        "id": silence.id,
        "matchers": [m.to_dict() for m in silence.matchers],
        "startsAt": silence.starts_at,
        "endsAt": silence.ends_at,
        "createdBy": silence.created_by,
        "comment": silence.comment,
        "status": {"state": silence.state(now)},
    }
