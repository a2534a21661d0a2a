"""API keys: a small SQLite store (hashed secrets, route scopes, expiry) and the gateway's in-memory cache of it.

A key reads ``lk_<id>_<secret>``. Only ``sha256(secret)`` is stored; the id is
the public handle shown by ``lichen keys list`` and written to logs. The
gateway never queries SQLite per request: it keeps every key in a dict and
reloads it when the database file changes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from lichen.control.access import credential_state
from lichen.control.routing import prefix_matches
from lichen.errors import ConfigError, StateError

TOKEN_PREFIX = "lk_"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    scopes TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    revoked_at REAL
)
"""


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    name: str
    secret_sha256: str
    scopes: tuple[str, ...]
    created_at: float
    expires_at: float | None
    revoked_at: float | None

    def state(self, now_wall: float) -> str:
        return credential_state(self.revoked_at, self.expires_at, now_wall)

    def allows(self, path: str) -> bool:
        return any(scope == "*" or prefix_matches(scope, path) for scope in self.scopes)

    def public(self) -> dict[str, object]:
        """What may be shown or logged: never the secret or its hash."""
        return {
            "id": self.id, "name": self.name, "scopes": list(self.scopes), "created_at": self.created_at,
            "expires_at": self.expires_at, "revoked_at": self.revoked_at, "state": self.state(time.time()),
        }


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_token(token: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a well-formed key, else None."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    parts = token.split("_", 2)
    if len(parts) != 3 or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def database_signature(path: Path) -> tuple[int, int, int]:
    """What changes when an SQLite file is written: mtime, size and the change counter SQLite bumps on every
    committed write (bytes 24-27); ``(0, 0, 0)`` when the file is missing or unreadable."""
    try:
        stat = os.stat(path)
        with open(path, "rb") as handle:
            counter = int.from_bytes(handle.read(28)[24:28], "big")
    except OSError:
        return (0, 0, 0)
    return (stat.st_mtime_ns, stat.st_size, counter)


def read_rows(path: Path, query: str, what: str) -> list[tuple]:
    """Every row ``query`` returns from the SQLite file at ``path``, opened read-only; none when there is no
    file; an unreadable one is a :class:`StateError` naming ``what`` and the file."""
    if not path.exists():
        return []
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
        try:
            return conn.execute(query).fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StateError(f"cannot read {what}: {exc}", where=str(path)) from None


class KeyStore:
    """The SQLite file behind ``lichen keys``; every change is one transaction."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=5.0)
            conn.execute(_SCHEMA)
            return conn
        except sqlite3.Error as exc:
            raise StateError(f"cannot open the key store: {exc}", where=str(self.path)) from None

    def create(self, name: str, scopes: list[str], expires_at: float | None) -> tuple[ApiKey, str]:
        """A new key and its token (shown once; only its hash is kept)."""
        for scope in scopes:
            if scope != "*" and not scope.startswith("/"):
                raise ConfigError(f"scope {scope!r} must be a route prefix starting with '/' or '*'", where="--scope")
        key_id = secrets.token_hex(4)
        secret = secrets.token_urlsafe(24)
        key = ApiKey(key_id, name, hash_secret(secret), tuple(scopes or ["*"]), time.time(), expires_at, None)
        with self._connect() as conn:
            conn.execute(
                "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key.id, key.name, key.secret_sha256, json.dumps(list(key.scopes)), key.created_at, expires_at, None),
            )
        return key, f"{TOKEN_PREFIX}{key_id}_{secret}"

    def revoke(self, key_id: str) -> ApiKey:
        with self._connect() as conn:
            changed = conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (time.time(), key_id)
            ).rowcount
        keys = self.all()
        if key_id not in keys:
            raise ConfigError(f"no API key with id {key_id!r} (see `lichen keys list`)", where=str(self.path))
        if not changed and keys[key_id].revoked_at is None:
            raise StateError(f"could not revoke key {key_id!r}", where=str(self.path))
        return keys[key_id]

    def all(self) -> dict[str, ApiKey]:
        rows = read_rows(self.path, "SELECT * FROM api_keys ORDER BY created_at", "the key store")
        return {
            row[0]: ApiKey(row[0], row[1], row[2], tuple(json.loads(row[3])), row[4], row[5], row[6]) for row in rows
        }


class KeyCache:
    """Every key in memory, reloaded when the database file's mtime or size changes."""

    def __init__(self, path: str | Path) -> None:
        self.store = KeyStore(path)
        self.keys: dict[str, ApiKey] = {}
        self._signature: tuple[int, int, int] | None = None

    def refresh(self) -> bool:
        """Reload if the file changed; True when it did. A read failure keeps the last good keys."""
        signature = database_signature(self.store.path)
        if signature == self._signature:
            return False
        try:
            self.keys = self.store.all() if signature != (0, 0, 0) else {}
        except StateError:
            return False
        self._signature = signature
        return True

    def verify(self, token: str, path: str, now_wall: float) -> tuple[ApiKey | None, str]:
        """``(key, "ok")`` or ``(None, reason)`` with reason in invalid_key, revoked_key, expired_key, out_of_scope."""
        parts = split_token(token)
        if parts is None:
            return None, "invalid_key"
        key = self.keys.get(parts[0])
        if key is None or not hmac.compare_digest(key.secret_sha256, hash_secret(parts[1])):
            return None, "invalid_key"
        state = key.state(now_wall)
        if state != "active":
            return None, f"{state}_key"
        if not key.allows(path):
            return None, "out_of_scope"
        return key, "ok"
