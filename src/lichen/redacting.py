"""What never reaches a log line as written: secret-named fields, and the app's PII redaction rules.

Two defences, both applied where a line is written (:mod:`lichen.logs` for
every record, :mod:`lichen.sdk.wrapping` and the gateway for request lines):

- **Secret-named fields** (``token``, ``password``, ``authorization``,
  ``cookie``, ``api_key``, ... also inside a snake_case name and, since
  redaction rules exist, as keys of a dict or list logged as a field) are
  written as ``"[redacted]"`` (:func:`is_secret_field`).
- **Redaction rules** (``observability.redact`` in ``lichen.yaml``): each
  names a field (a JSON body key, a query parameter or a header) and an
  action. ``hash`` writes ``h_`` plus the first 16 hex digits of
  HMAC-SHA256(salt, value), with one salt per app kept in
  ``.lichen/redact.salt``: the same user id gives the same token in every
  line of every replica and the gateway, so lines stay joinable, and the id
  cannot be read back without the salt. ``drop`` leaves the field out.
  A log field (or a dict key inside one) whose name matches a rule is
  hashed or dropped; a request line (the SDK's ``request`` line, the
  gateway's ``request_denied``) adds the hashed token of each ``hash``
  field the request carries, named after the field (``user_id``). No rule
  may name a field a request line writes itself (:data:`LINE_FIELDS`:
  ``path``, ``status``, the gateway's ``client_ip`` and ``reason``, ...),
  and a line's own fields win over any token (:func:`line_fields`).

Names match case-insensitively with ``-`` and ``_`` alike (header
``X-User-Id`` is field ``x_user_id``). The headers ``Authorization``,
``Cookie`` and ``X-Api-Key`` are always dropped unless a rule names them.
Redaction works on fields, never on free text: a value formatted into a
message, an error or a traceback is written as it is, so log ids as fields.

The rules travel as text (``LICHEN_REDACT`` for a replica, ``redact`` in the
gateway's config): ``ACTION:WHERE:NAME`` entries, comma-separated, e.g.
``hash:query:user_id,hash:body:user_id,drop:header:x-email``; the salt as a
file path (``LICHEN_REDACT_SALT_FILE``), never in the spec. A plan
(:class:`Redaction`) is built once per process; a line with no matching
field costs one dict lookup per field and allocates nothing.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from lichen.errors import ConfigError

__all__ = ["ACTIONS", "DEFAULT_RULES", "LINE_FIELDS", "LOCATIONS", "REDACTED", "Hashed", "Redaction", "Rule",
           "is_secret_field", "line_field_error", "line_fields", "load_redaction", "normalized", "parse_rules",
           "read_salt", "request_tokens_json", "rules_text"]

REDACTED = "[redacted]"
ACTIONS = ("hash", "drop")
LOCATIONS = ("body", "query", "header")
FIELD_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
SALT_BYTES = 32
TOKEN_HEX = 16
"""hex digits of the HMAC kept: 64 bits, so distinct ids collide with odds about n^2 / 2^65"""
BODY_MAX_BYTES = 64 * 1024
"""a request body larger than this is not searched for redacted keys (its line carries no token from it)"""

Rule = tuple[str, str, str]
"""``(action, where, name)``: ``("hash", "query", "user_id")``"""

LINE_FIELDS = frozenset({
    "ts", "level", "logger", "event",  # every line (lichen.logs)
    "service", "replica", "revision",  # every replica line (the SDK's static fields)
    "request_id", "method", "path", "endpoint", "status", "latency_ms",  # the SDK's request line
    "error", "traceback", "exc_info",  # its request_failed line, and the logging call's own keyword
    "reason", "client_ip",  # the gateway's request_denied line
})
"""fields a request line writes itself: no rule may name one (:func:`line_field_error`), and a request line never
takes a token by one of these names (:func:`line_fields`), so a token cannot replace or collide with them"""

DEFAULT_RULES: tuple[Rule, ...] = (("drop", "header", "authorization"), ("drop", "header", "cookie"),
                                   ("drop", "header", "x-api-key"))
"""always in force; a rule naming one of these headers replaces it"""

_SECRET_PARTS = frozenset(
    {"token", "secret", "secrets", "password", "passwd", "authorization", "cookie", "credential", "credentials",
     "apikey"}
)
_FIELD = re.compile(FIELD_PATTERN)


@functools.lru_cache(maxsize=1024)  # field names are few and fixed: decided once each, not per line
def is_secret_field(name: str) -> bool:
    """Whether a field named ``name`` would carry a secret (its value is then written as ``[redacted]``)."""
    lowered = name.lower().replace("-", "_")  # a header's name (X-Api-Key) as a field's (x_api_key)
    if lowered in ("key", "api_key") or lowered.endswith("_api_key"):
        return True
    return not _SECRET_PARTS.isdisjoint(lowered.split("_"))


def normalized(name: str) -> str:
    """The field name a rule, a header, a query parameter or a log field is matched by: lower case, ``_``."""
    return name.lower().replace("-", "_")


def line_field_error(name: str) -> str | None:
    """Why a rule may not name ``name`` (one of :data:`LINE_FIELDS`), or None when it may."""
    if normalized(name) not in LINE_FIELDS:
        return None
    return (f"{name!r} is a field every request line writes itself; name the field otherwise (redaction cannot "
            f"apply to {', '.join(sorted(LINE_FIELDS))})")


def line_fields(own: dict[str, Any], tokens: Mapping[str, Hashed] | None) -> dict[str, Any]:
    """A request line's fields: ``own``, then each token not named like one of them or a line field.

    The line's own fields always win, and the result is passed as one mapping, so a token (from a rule written
    by hand, which no validation saw) can neither replace a field nor collide with a keyword of the logging call.
    """
    if not tokens:
        return own
    merged = dict(own)
    for name, value in tokens.items():
        if name not in LINE_FIELDS and name not in merged:
            merged[name] = value
    return merged


class Hashed(str):
    """A token already hashed (a request line's field): a log line writes it as it is, never hashes it again."""

    __slots__ = ()


def parse_rules(text: str) -> tuple[Rule, ...]:
    """Rules from their text form (``hash:query:user_id,drop:header:x-email``); ValueError names the bad entry."""
    rules = []
    for entry in text.split(","):
        entry = entry.strip()
        if not entry:
            continue
        parts = entry.split(":")
        if (len(parts) != 3 or parts[0] not in ACTIONS or parts[1] not in LOCATIONS
                or not _FIELD.match(parts[2])):
            raise ValueError(f"must be ACTION:WHERE:NAME entries, comma-separated (action hash or drop, where "
                             f"body, query or header), got {entry!r}")
        reserved = line_field_error(parts[2])
        if reserved:
            raise ValueError(f"{entry}: {reserved}")
        rules.append((parts[0], parts[1], parts[2]))
    return tuple(rules)


def rules_text(rules: Iterable[Rule]) -> str:
    """The text form of ``rules`` (what :func:`parse_rules` reads)."""
    return ",".join(f"{action}:{where}:{name}" for action, where, name in rules)


def read_salt(path: str | Path) -> bytes:
    """The app's redaction salt from its file (hex text); a ConfigError names the file."""
    source = Path(path)
    try:
        text = source.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the redaction salt: {exc.strerror}", where=str(source)) from None
    try:
        salt = bytes.fromhex(text)
    except ValueError:
        salt = b""
    if len(salt) < 16:
        raise ConfigError("not a redaction salt (expected at least 32 hex digits on one line)", where=str(source))
    return salt


class Redaction:
    """One process's redaction plan: the rules, decided once per field name, and the salt.

    ``salt`` None: a ``hash`` rule drops its field instead (a value is never
    written raw for want of a salt), and :attr:`unsalted` says so. A rule naming
    one of :data:`LINE_FIELDS` (refused by :func:`parse_rules` and the spec, so
    only a plan built by hand has one) is left out: it would hash or drop a
    field a request line writes itself, or give a token of that name.
    """

    __slots__ = ("rules", "salt", "unsalted", "headers", "query", "body", "requests", "_by_name", "_decided")

    def __init__(self, rules: Iterable[Rule] = (), salt: bytes | None = None) -> None:
        by_where: dict[tuple[str, str], str] = {(where, normalized(name)): action
                                                for action, where, name in DEFAULT_RULES}
        for action, where, name in rules:
            if normalized(name) not in LINE_FIELDS:
                by_where[(where, normalized(name))] = action
        self.rules: tuple[Rule, ...] = tuple((action, where, name) for (where, name), action in by_where.items())
        self.salt = salt
        self.unsalted = salt is None and any(action == "hash" for action, _, _ in self.rules)
        by_name: dict[str, str] = {}
        for action, _, name in self.rules:  # a name hashed anywhere is hashed as a log field
            if by_name.get(name) != "hash":
                by_name[name] = action
        self._by_name = by_name
        hashed = {(where, name) for action, where, name in self.rules if action == "hash" and salt is not None}
        self.headers = {name.replace("_", "-").encode(): name for where, name in hashed if where == "header"}
        """header (lower-case bytes, as ASGI and the gateway hold it) -> field name, for ``hash`` rules"""
        self.query = {name: name for where, name in hashed if where == "query"}
        self.body = {name: name for where, name in hashed if where == "body"}
        self.requests = bool(self.headers or self.query or self.body)
        """whether a request line can carry a token at all (False: nothing to look at per request)"""
        self._decided: dict[str, str | None] = {}

    # ------------------------------------------------------------------ values
    def token(self, value: Any) -> Hashed:
        """``h_`` + 16 hex digits of HMAC-SHA256(salt, value); ``42`` and ``"42"`` give the same token."""
        if isinstance(value, bytes):
            data = value
        elif isinstance(value, str):
            data = value.encode()
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            data = str(value).encode()
        else:
            data = json.dumps(value, sort_keys=True, default=str, separators=(",", ":")).encode()
        digest = hmac.new(self.salt or b"", data, hashlib.sha256).hexdigest()
        return Hashed("h_" + digest[:TOKEN_HEX])

    def _decide(self, name: str) -> str | None:
        """``"secret"``, ``"hash"``, ``"drop"`` or None (written as it is) for a field named ``name``."""
        decided = self._decided.get(name, "")
        if decided != "":
            return decided
        if is_secret_field(name):
            decided = "secret"
        else:
            action = self._by_name.get(normalized(name))
            decided = "drop" if action == "hash" and self.salt is None else action
        if len(self._decided) < 4096:  # names come from code, but a dict logged whole may bring many
            self._decided[name] = decided
        return decided

    # ------------------------------------------------------------------ log lines
    def fields(self, fields: dict[str, Any]) -> dict[str, Any]:
        """A line's fields with the rules applied (the same dict when nothing matched).

        Top-level secret names were written as ``[redacted]`` already (:class:`lichen.logs.Event`); inside a
        dict or list they are redacted here, as are rule names at any depth.
        """
        changed: dict[str, Any] | None = None
        for name, value in fields.items():
            decided = self._decide(name) if type(value) is not Hashed else None
            if decided is None or decided == "secret":
                if isinstance(value, (dict, list, tuple)):
                    inner = self._nested(value)
                    if inner is not value:
                        changed = dict(fields) if changed is None else changed
                        changed[name] = inner
                continue
            changed = dict(fields) if changed is None else changed
            if decided == "drop":
                del changed[name]
            else:
                changed[name] = self.token(value)
        return fields if changed is None else changed

    def _nested(self, value: Any) -> Any:
        if isinstance(value, dict):
            changed: dict[Any, Any] | None = None
            for key, item in value.items():
                decided = self._decide(key) if isinstance(key, str) and type(item) is not Hashed else None
                if decided is None:
                    inner = self._nested(item) if isinstance(item, (dict, list, tuple)) else item
                    if inner is not item:
                        changed = dict(value) if changed is None else changed
                        changed[key] = inner
                    continue
                changed = dict(value) if changed is None else changed
                if decided == "drop":
                    del changed[key]
                else:
                    changed[key] = REDACTED if decided == "secret" else self.token(item)
            return value if changed is None else changed
        if isinstance(value, (list, tuple)):
            items: list[Any] | None = None
            for index, item in enumerate(value):
                inner = self._nested(item) if isinstance(item, (dict, list, tuple)) else item
                if inner is not item and items is None:
                    items = list(value[:index])
                if items is not None:
                    items.append(inner)
            return value if items is None else items
        return value

    # ------------------------------------------------------------------ requests
    def request_fields(self, headers: Iterable[tuple[bytes, bytes]], query: bytes,
                       body: bytes | None = None) -> dict[str, Hashed] | None:
        """The hashed tokens a request line adds: each ``hash`` field the request carries, by field name.

        ``headers`` as ASGI and the gateway hold them (lower-case names); ``query`` the raw query string;
        ``body`` a JSON body (searched only for ``body`` rules, up to 64 KiB). None when there is none.
        Never raises: it runs while a request line is written (in the SDK, in the ASGI wrapper's ``finally``),
        and whatever a client sent, that line is written; a request it cannot read carries no token.
        """
        try:
            return self._request_fields(headers, query, body)
        except Exception:  # a body nested past the recursion limit, or anything else odd: no token
            return None

    def _request_fields(self, headers: Iterable[tuple[bytes, bytes]], query: bytes,
                        body: bytes | None) -> dict[str, Hashed] | None:
        found: dict[str, Hashed] | None = None
        if self.headers:
            for name, value in headers:
                field = self.headers.get(name)
                if field is not None:
                    found = found or {}
                    found.setdefault(field, self.token(value.decode("latin-1")))
        if self.query and query:
            text = query.decode("latin-1")
            folded = text.lower().replace("-", "_")
            if any(name in folded for name in self.query):  # cheap test before parsing
                for key, value in parse_qsl(text, keep_blank_values=True):
                    field = self.query.get(normalized(key))
                    if field is not None:
                        found = found or {}
                        found.setdefault(field, self.token(value))
        if self.body and body and len(body) <= BODY_MAX_BYTES:
            found = self._body_fields(body, found)
        return found

    def _body_fields(self, body: bytes, found: dict[str, Hashed] | None) -> dict[str, Hashed] | None:
        folded = body.lower().replace(b"-", b"_")  # once per body, not once per rule
        if not any(name.encode() in folded for name in self.body):  # cheap test before parsing
            return found
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser recurses
            return found
        stack = [document]
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                for key, value in item.items():
                    field = self.body.get(normalized(key)) if isinstance(key, str) else None
                    if field is not None and not isinstance(value, (dict, list)):
                        found = found or {}
                        found.setdefault(field, self.token(value))
                    elif isinstance(value, (dict, list)):
                        stack.append(value)
            elif isinstance(item, list):
                stack.extend(i for i in item if isinstance(i, (dict, list)))
        return found


def load_redaction(rules: str | Iterable[Rule] = "", salt_file: str | Path | None = None) -> Redaction:
    """The plan for ``rules`` (text or tuples), with the salt read from ``salt_file`` when a rule hashes."""
    parsed = parse_rules(rules) if isinstance(rules, str) else tuple(rules)
    salt = None
    if salt_file and any(action == "hash" for action, _, _ in parsed):
        salt = read_salt(salt_file)
    return Redaction(parsed, salt)


def request_tokens_json(tokens: Mapping[str, Hashed] | None) -> str:
    """``,"name":"h_..."`` for each token, as a JSON line writes them (the SDK's request line appends it)."""
    if not tokens:
        return ""
    return "".join(f",{json.dumps(name)}:{json.dumps(str(value))}" for name, value in tokens.items()
                   if name not in LINE_FIELDS)  # the line's own fields, written before (as line_fields keeps them)
