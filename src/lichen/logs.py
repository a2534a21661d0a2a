"""One log style for every Lichen process: an event name plus fields.

Write a log line as a snake_case event name and keyword fields, never as a
formatted string (structlog's style, on the standard ``logging`` module)::

    from lichen.logs import get_logger

    log = get_logger("lichen.gateway")
    log.info("request_denied", reason="rate_limit", key_id=kid)
    log.warning("reload_refused", error=str(exc), path=str(path))
    log.exception("probe_failed", replica=replica_id)   # level error, adds error + traceback

With a plain ``logging.Logger`` in hand, :func:`log_event` does the same::

    log_event(logging.getLogger("lichen.gateway"), "reloaded", routes=3, services=2)
    log_event(logger, "reload_failed", level=logging.ERROR, error=str(exc))

Each process entry point (``lichen serve``, the controller, the gateway, a job)
calls :func:`configure` once; from then on every record, also uvicorn's and
the user's own ``logging`` calls, is one JSON object on one line::

    {"ts":"2026-11-26T18:49:05.149Z","level":"info","logger":"lichen.gateway","event":"request_denied","reason":"rate_limit","key_id":"k1"}

- ``ts`` (UTC, milliseconds), ``level``, ``logger`` and ``event`` come first on
  every line; a record written with a message instead of an event (uvicorn's,
  a user's) has that message as its ``event``.
- Then the process's own fields (``configure(static_fields=...)``, e.g. a
  replica's ``service``/``replica``/``revision``), the ``request_id`` of the
  request being handled (:data:`REQUEST_ID`), its ``trace_id`` and ``span_id``
  (:data:`TRACE`: the gateway's span of it, or the replica's), and the
  event's fields.
- A record with an exception adds ``error`` (``Type: message``) and
  ``traceback``, still on one line.
- A field whose name says it is a secret (``token``, ``secret``, ``password``,
  ``authorization``, ``cookie``, ``credentials``, ``api_key``, ``key``, also as
  parts of a snake_case name such as ``bearer_token``, and as a key of a dict
  logged as a field) is written as ``"[redacted]"``: log an id (``key_id``),
  never the secret.
- The process's redaction plan (:mod:`lichen.redacting`, from
  ``observability.redact``; ``configure(redaction=...)``) hashes or drops the
  fields it names, at any depth.
- Field names ``ts``, ``level``, ``logger`` and ``event`` are reserved
  (``TypeError``). Put units in names (``latency_ms``, ``grace_s``).

Handlers that are not JSON (pytest's ``caplog``, ``logging.lastResort``) see
``event key=value ...`` as the record's message; :func:`as_event` gives a
record's event name and fields back as data, for tests.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
from typing import IO, Any, Protocol

from lichen.redacting import REDACTED, Redaction, is_secret_field

__all__ = [
    "REQUEST_ID",
    "TRACE",
    "Event",
    "EventLogger",
    "JsonFormatter",
    "active_redaction",
    "as_event",
    "configure",
    "get_logger",
    "is_secret_field",
    "log_event",
    "set_redaction",
    "snake_case",
]

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("lichen_request_id", default=None)
"""The id of the request being handled in this context; every line logged meanwhile carries it."""



class TraceIds(Protocol):
    """What :data:`TRACE` holds: the ids of the span being handled, formatted only when a line is written."""

    def log_ids(self) -> tuple[str, str]:
        """``(trace_id, span_id)`` in lower-case hex, as OpenTelemetry and the W3C ``traceparent`` write them."""
        ...


TRACE: contextvars.ContextVar[TraceIds | None] = contextvars.ContextVar("lichen_trace", default=None)
"""The span of the request being handled in this context; every line logged meanwhile carries its
``trace_id`` and ``span_id`` (the gateway's span, or the replica's)."""

RESERVED_FIELDS = frozenset({"ts", "level", "logger", "event"})
# Attributes every LogRecord has; anything else a caller passed in ``extra=`` is a field.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message", "taskName"}
_ENCODER = json.JSONEncoder(default=str, separators=(",", ":"))


_WORD_START = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def snake_case(name: str) -> str:
    """An event name from a PascalCase kind: ``"CrashLoopBackOff"`` -> ``"crash_loop_back_off"``."""
    return _WORD_START.sub("_", name).replace("-", "_").replace(" ", "_").lower()


_redaction = Redaction()
"""this process's redaction plan: the default rules until :func:`configure` or :func:`set_redaction` sets one"""


def active_redaction() -> Redaction:
    """The redaction plan every line of this process goes through (request lines read their tokens from it)."""
    return _redaction


def set_redaction(plan: Redaction) -> None:
    """Make ``plan`` the one every later line goes through (the gateway's on a config reload).

    A plan with ``hash`` rules but no salt drops those fields instead, and says so in a warning line.
    """
    global _redaction
    _redaction = plan
    if plan.unsalted:
        get_logger("lichen.logs").warning(
            "redaction_unsalted", fields=sorted({name for action, _, name in plan.rules if action == "hash"}),
            advice="no redaction salt (LICHEN_REDACT_SALT_FILE): these fields are dropped, not hashed")


def _redacted(fields: dict[str, Any]) -> dict[str, Any]:
    if any(is_secret_field(name) for name in fields):
        return {name: REDACTED if is_secret_field(name) else value for name, value in fields.items()}
    return fields


class Event:
    """A record's message when it was logged as an event: a name plus fields (what the JSON line holds)."""

    __slots__ = ("name", "fields")

    def __init__(self, name: str, fields: dict[str, Any]) -> None:
        reserved = RESERVED_FIELDS.intersection(fields)
        if reserved:
            raise TypeError(f"log field {sorted(reserved)[0]!r} is reserved (ts, level, logger and event are)")
        self.name = name
        self.fields = _redaction.fields(_redacted(fields))

    def __str__(self) -> str:  # for handlers that are not JSON: 'replica_started service=api pid=12'
        parts = [self.name]
        for key, value in self.fields.items():
            text = value if isinstance(value, str) and value and value.isprintable() and " " not in value \
                and '"' not in value and "=" not in value else _ENCODER.encode(value)
            parts.append(f"{key}={text}")
        return " ".join(parts)

    def __repr__(self) -> str:
        return f"Event({self.name!r}, {self.fields!r})"


def as_event(record: logging.LogRecord) -> Event:
    """A record's event name and fields; a record logged with a plain message gives that message and its extras."""
    if isinstance(record.msg, Event):
        return record.msg
    extras = {key: value for key, value in record.__dict__.items() if key not in _STANDARD and not key.startswith("_")}
    for name in RESERVED_FIELDS.intersection(extras):  # an ``extra={"event": ...}`` must not replace the name
        extras[f"extra_{name}"] = extras.pop(name)
    return Event(record.getMessage(), extras)


def log_event(logger: logging.Logger, event: str, /, *, level: int = logging.INFO, exc_info: Any = None,
              **fields: Any) -> None:
    """Log ``event`` with ``fields`` on a standard logger (nothing is built when ``level`` is off)."""
    if logger.isEnabledFor(level):
        logger.log(level, Event(event, fields), exc_info=exc_info)


class EventLogger:
    """A standard logger that takes an event name plus fields: ``log.info("reloaded", routes=3)``."""

    __slots__ = ("logger",)

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802  (the logging module's name, for drop-in use)
        return self.logger.isEnabledFor(level)

    def log(self, level: int, event: str, /, *, exc_info: Any = None, **fields: Any) -> None:
        if self.logger.isEnabledFor(level):
            self.logger.log(level, Event(event, fields), exc_info=exc_info)

    def debug(self, event: str, /, **fields: Any) -> None:
        self.log(logging.DEBUG, event, **fields)

    def info(self, event: str, /, **fields: Any) -> None:
        self.log(logging.INFO, event, **fields)

    def warning(self, event: str, /, *, exc_info: Any = None, **fields: Any) -> None:
        self.log(logging.WARNING, event, exc_info=exc_info, **fields)

    def error(self, event: str, /, *, exc_info: Any = None, **fields: Any) -> None:
        self.log(logging.ERROR, event, exc_info=exc_info, **fields)

    def exception(self, event: str, /, **fields: Any) -> None:
        """Level error with the exception being handled (``error`` and ``traceback`` fields)."""
        self.log(logging.ERROR, event, exc_info=True, **fields)


def get_logger(name: str) -> EventLogger:
    """The event logger named ``name`` (``lichen.controller``, ``lichen.gateway``, ...)."""
    return EventLogger(logging.getLogger(name))


class JsonFormatter(logging.Formatter):
    """Formats every record as one JSON line: ts, level, logger, event, static fields, request_id, fields."""

    def __init__(self, static_fields: dict[str, Any] | None = None) -> None:
        super().__init__()
        self._static = dict(static_fields or {})
        self.static_json = _ENCODER.encode(self._static)[1:-1]
        """the static fields as they appear in every line (``"service":"api","replica":"api-0"``), or ``""``"""
        self._second = -1
        self._second_text = ""

    def timestamp(self, created: float) -> str:
        """The ``ts`` of a record created at ``created`` (``time.time()``): UTC, milliseconds."""
        second = int(created)
        if second != self._second:  # one strftime per second, not per line
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._second_text}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        event = as_event(record)
        data: dict[str, Any] = {
            "ts": self.timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": event.name,
        }
        data.update(self._static)
        if "request_id" not in event.fields:
            request_id = REQUEST_ID.get()
            if request_id is not None:
                data["request_id"] = request_id
        trace = TRACE.get()
        if trace is not None and "trace_id" not in event.fields:
            data["trace_id"], data["span_id"] = trace.log_ids()
        data.update(event.fields)
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            data.setdefault("error", f"{type(exc).__name__}: {exc}")
            data["traceback"] = self.formatException(record.exc_info)
        return _ENCODER.encode(data)


def configure(level: str | int = "info", *, stream: IO[str] | None = None,
              static_fields: dict[str, Any] | None = None, handler: logging.Handler | None = None,
              redaction: Redaction | None = None) -> logging.Handler:
    """Make every record of this process one JSON line on ``stream`` (stderr); returns the handler installed.

    Replaces the root logger's handlers, so call it once, from a process's entry point. Loggers a
    library configured on its own (uvicorn's default config gives ``uvicorn`` a handler and stops
    propagation) lose their handlers and propagate again, so their records take the same style.
    ``handler`` replaces the ``StreamHandler`` on ``stream`` (a replica batches its writes,
    :class:`lichen.sdk.logs.LoopBatchingHandler`); it gets the JSON formatter. ``redaction`` (default: the
    default rules) becomes the process's plan (:func:`set_redaction`).
    """
    # Our lines carry none of these; skipping them makes each record several microseconds cheaper.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # type: ignore[attr-defined]  # no caller lookup: we never print file:line
    if handler is None:
        handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(static_fields))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for logger in list(logging.root.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger) and (logger.handlers or not logger.propagate):
            for old in list(logger.handlers):
                logger.removeHandler(old)
            logger.propagate = True
    set_redaction(redaction if redaction is not None else Redaction())
    return handler
