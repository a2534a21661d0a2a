"""Structured JSON logs: one object per line, one line per request.

Every record carries ``ts``, ``level``, ``logger`` and ``msg``; request
records add ``request_id``, ``method``, ``path``, ``status`` and
``latency_ms``. ``service``, ``replica`` and ``revision`` come from the
supervisor's env (``LICHEN_SERVICE``, ``LICHEN_REPLICA``,
``LICHEN_REVISION``) when set. A log line emitted while a request is being
handled (also from a sync handler's thread) gets that request's id.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
import time
from typing import Any

ACCESS_LOGGER = "lichen.access"
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("lichen_request_id", default=None)
_ENV_FIELDS = (("service", "LICHEN_SERVICE"), ("replica", "LICHEN_REPLICA"), ("revision", "LICHEN_REVISION"))
# Attributes every LogRecord has; anything else passed in ``extra`` is a field.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message", "taskName"}


def current_request_id() -> str | None:
    """The id of the request being handled in this context, if any."""
    return REQUEST_ID.get()


def replica_fields() -> dict[str, str]:
    """``service``/``replica``/``revision`` from the env, for every log line."""
    return {field: os.environ[name] for field, name in _ENV_FIELDS if os.environ.get(name)}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object on one line."""

    def __init__(self, static_fields: dict[str, str] | None = None) -> None:
        super().__init__()
        self._static = replica_fields() if static_fields is None else dict(static_fields)
        self._encoder = json.JSONEncoder(default=str, separators=(",", ":"))
        self._second = -1
        self._second_text = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # one strftime per second, not per line
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        data: dict[str, Any] = {
            "ts": f"{self._second_text}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        data.update(self._static)
        if "request_id" not in record.__dict__:
            request_id = REQUEST_ID.get()
            if request_id is not None:
                data["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["error"] = self.formatException(record.exc_info)
        return self._encoder.encode(data)


def configure_logging(level: str = "info", stream: Any = None) -> None:
    """Send every log record (ours, uvicorn's, the user's) as JSON to ``stream`` (stderr)."""
    # Our lines carry none of these; skipping them makes each record several us cheaper.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # type: ignore[attr-defined]  # no caller lookup: we never print file:line
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
        logger.disabled = False  # an earlier dictConfig may have disabled or muted it
        logger.setLevel(logging.NOTSET)
    logging.getLogger("uvicorn.access").disabled = True  # we log each request ourselves


def uvicorn_log_config() -> dict[str, Any]:
    """A uvicorn ``log_config`` that leaves logging to :func:`configure_logging`."""
    return {"version": 1, "disable_existing_loggers": False}
