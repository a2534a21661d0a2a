"""Control-API tokens with roles: a small SQLite store (``.lichen/tokens.db``) and the API's cache of it.

A token reads ``lct_<id>_<secret>``. Only ``sha256(secret)`` is stored; the
id is the public handle that ``lichen tokens list`` shows and the audit log
records. ``.lichen/token`` (made by the first ``lichen up``, mode 0600) stays
the app owner's token: it has the ``admin`` role and the id ``owner``.
The API never reads SQLite per request: :class:`TokenCache` keeps every token
in memory and reloads when the file changes, so ``lichen tokens revoke``
takes effect on the next call.
"""

from __future__ import annotations

import hmac
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fastapi import HTTPException, Request

from lichen.control.access import REQUIREMENTS, ROLES, Needed, Principal, Role, credential_state, judge
from lichen.errors import ConfigError, StateError
from lichen.gateway.keys import database_signature, hash_secret, read_rows

TOKEN_PREFIX = "lct_"
OWNER_ID = "owner"
"""the id of the token in ``.lichen/token``"""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS control_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    revoked_at REAL
)
"""


@dataclass(frozen=True, slots=True)
class ControlToken:
    id: str
    name: str
    role: Role
    secret_sha256: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None

    def state(self, now_wall: float) -> str:
        return credential_state(self.revoked_at, self.expires_at, now_wall)

    def public(self, now_wall: float) -> dict[str, object]:
        """What may be shown or logged: never the secret or its hash."""
        return {"id": self.id, "name": self.name, "role": self.role, "created_at": self.created_at,
                "expires_at": self.expires_at, "revoked_at": self.revoked_at, "state": self.state(now_wall)}


class TokenStore:
    """The SQLite file behind ``lichen tokens``; every change is one transaction."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fresh = not self.path.exists()
            conn = sqlite3.connect(self.path, timeout=5.0)
            if fresh:
                os.chmod(self.path, 0o600)
            conn.execute(_SCHEMA)
            return conn
        except sqlite3.Error as exc:
            raise StateError(f"cannot open the token store: {exc}", where=str(self.path)) from None

    def create(self, name: str, role: Role, expires_at: float | None, now_wall: float | None = None) -> tuple[ControlToken, str]:
        """A new token and its secret text (shown once; only its hash is kept)."""
        if role not in ROLES:
            raise ConfigError(f"unknown role {role!r}; roles: {', '.join(ROLES)}", where="--role")
        if not name.strip():
            raise ConfigError("a token needs a name (who or what will use it)", where="NAME")
        token_id = secrets.token_hex(4)
        secret = secrets.token_urlsafe(32)
        token = ControlToken(token_id, name.strip(), role, hash_secret(secret), now_wall or time.time(), expires_at, None)
        conn = self._connect()
        try:
            with conn:
                conn.execute("INSERT INTO control_tokens VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (token.id, token.name, token.role, token.secret_sha256, token.created_at, expires_at, None))
        except sqlite3.Error as exc:
            raise StateError(f"cannot write the token store: {exc}", where=str(self.path)) from None
        finally:
            conn.close()
        return token, f"{TOKEN_PREFIX}{token_id}_{secret}"

    def revoke(self, token_id: str, now_wall: float | None = None) -> ControlToken:
        conn = self._connect()
        try:
            with conn:
                conn.execute("UPDATE control_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                             (now_wall or time.time(), token_id))
        except sqlite3.Error as exc:
            raise StateError(f"cannot write the token store: {exc}", where=str(self.path)) from None
        finally:
            conn.close()
        tokens = self.all()
        if token_id not in tokens:
            raise ConfigError(f"no token with id {token_id!r} (see `lichen tokens list`)", where=str(self.path))
        return tokens[token_id]

    def all(self) -> dict[str, ControlToken]:
        rows = read_rows(self.path, "SELECT * FROM control_tokens ORDER BY created_at", "the token store")
        return {row[0]: ControlToken(row[0], row[1], row[2], row[3], row[4], row[5], row[6])
                for row in rows if row[2] in ROLES}


class TokenCache:
    """The owner's token plus every stored token, in memory; reloaded when the database file changes."""

    def __init__(self, path: str | Path, owner_token: str) -> None:
        self.store = TokenStore(path)
        self.owner_token = owner_token
        self.tokens: dict[str, ControlToken] = {}
        self._signature: tuple[int, int, int] | None = None

    def refresh(self) -> None:
        """Reload if the file changed (mtime, size or SQLite's change counter). A failed read keeps the last
        good tokens."""
        signature = database_signature(self.store.path)
        if signature == self._signature:
            return
        try:
            self.tokens = self.store.all() if signature != (0, 0, 0) else {}
        except StateError:
            return
        self._signature = signature

    def identify(self, bearer: str, now_wall: float) -> tuple[Principal | None, str]:
        """``(principal, "ok")``, or ``(None, why)`` with why in missing, invalid, expired, revoked."""
        if not bearer:
            return None, "missing"
        if self.owner_token and hmac.compare_digest(bearer.encode(), self.owner_token.encode()):
            return Principal(OWNER_ID, "admin", "owner (.lichen/token)"), "ok"
        if not bearer.startswith(TOKEN_PREFIX):
            return None, "invalid"
        token_id, _, secret = bearer[len(TOKEN_PREFIX):].partition("_")
        self.refresh()
        token = self.tokens.get(token_id)
        if token is None or not secret or not hmac.compare_digest(token.secret_sha256, hash_secret(secret)):
            return None, "invalid"
        state = token.state(now_wall)
        if state != "active":
            return None, state
        return Principal(token.id, token.role, token.name), "ok"


class RoleCheck:
    """A FastAPI dependency that lets a call through only with a token whose role grants ``needed``
    (``public``: anyone). The API finds these on each route to know what the route declared."""

    __slots__ = ("guard", "needed")

    def __init__(self, guard: AccessGuard, needed: Needed) -> None:
        self.guard = guard
        self.needed = needed

    async def __call__(self, request: Request) -> None:  # async: runs on the loop, not in a thread
        if self.needed == "public":
            return
        scheme, _, value = (request.headers.get("authorization") or "").partition(" ")
        bearer = value.strip() if scheme.lower() == "bearer" else ""
        principal, why = self.guard.cache.identify(bearer, self.guard.wall())
        verdict = judge(principal, why, self.needed)
        request.state.principal = principal
        if not verdict.allowed:
            request.state.denied = verdict.reason
            hint = " (see .lichen/token, or ask an admin for one: lichen tokens create)" if verdict.status == 401 else ""
            raise HTTPException(status_code=verdict.status, detail=verdict.reason + hint)


class AccessGuard:
    """Checks bearer tokens against :class:`TokenCache` for the routes that declare a :class:`RoleCheck`."""

    def __init__(self, cache: TokenCache, wall: Callable[[], float] = time.time) -> None:
        self.cache = cache
        self.wall = wall

    def requires(self, needed: Needed) -> RoleCheck:
        return RoleCheck(self, needed)


def declared_requirement(route: object, extra: Sequence[object] = ()) -> Needed | None:
    """The strictest :class:`RoleCheck` among a route's dependencies (its router's included) and ``extra``
    (those it is included with); None when it declares none."""
    found: list[str] = [check.needed for check in extra if isinstance(check, RoleCheck)]
    stack = list(getattr(getattr(route, "dependant", None), "dependencies", []))
    while stack:
        dependant = stack.pop()
        if isinstance(dependant.call, RoleCheck):
            found.append(dependant.call.needed)
        stack.extend(dependant.dependencies)
    if not found:
        return None
    return max(found, key=REQUIREMENTS.index)  # type: ignore[return-value]
