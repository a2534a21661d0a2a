"""A replica's logs: Lichen's one log style (:mod:`lichen.logs`), one line per request.

Every line is one JSON object: ``ts``, ``level``, ``logger``, ``event``,
then ``service``, ``replica`` and ``revision`` from the replica contract
(:class:`~lichen.sdk.settings.ReplicaSettings`, env ``LICHEN_SERVICE``,
``LICHEN_REPLICA``, ``LICHEN_REVISION``) when set, then the event's fields.
Each request writes one ``request`` event from logger ``lichen.access``
(``request_id``, ``method``, ``path``, ``endpoint``, ``status``,
``latency_ms``, then the hashed token of each ``observability.redact``
field the request carries, named after the field: :mod:`lichen.redacting`).
A line logged while a request is being handled (also from a sync handler's
thread) gets that request's id.

``lichen serve`` writes through a :class:`LoopBatchingHandler`: the lines
logged on the event loop during one pass of the loop go out in one write,
so a busy replica pays one ``write()`` per loop pass instead of one per
request, and an idle one still writes each line at once.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from json.encoder import encode_basestring_ascii as _str
from collections.abc import Mapping
from typing import IO, Any

from lichen.logs import REQUEST_ID, JsonFormatter, configure
from lichen.redacting import Hashed, request_tokens_json
from lichen.sdk.settings import ReplicaSettings

__all__ = ["ACCESS_LOGGER", "REQUEST_ID", "JsonFormatter", "LoopBatchingHandler", "configure_logging",
           "current_request_id", "direct_handler", "request_line", "uvicorn_log_config"]

ACCESS_LOGGER = "lichen.access"


def current_request_id() -> str | None:
    """The id of the request being handled in this context, if any."""
    return REQUEST_ID.get()


class LoopBatchingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A ``StreamHandler`` that writes the lines logged on a running event loop once per pass of that loop.

    A line logged on the loop's thread (the access log, the replica's own
    events) is formatted at once and kept; a callback the loop runs on its
    next pass writes every kept line in one ``write()`` and flushes. Nothing
    waits for a timer: an idle loop writes a line on its very next pass. A
    line logged on any other thread (a sync handler's, ``setup()``'s, the
    main thread after the loop ended), ``flush()`` and ``close()`` write the
    kept lines first, so the order of lines is kept and none is left behind
    at exit (``logging.shutdown`` flushes every handler).
    """

    def __init__(self, stream: IO[str] | None = None) -> None:
        super().__init__(stream or sys.stderr)
        self._kept: list[str] = []
        self._flush_on: asyncio.AbstractEventLoop | None = None  # the loop a write is scheduled on

    def emit(self, record: logging.LogRecord) -> None:  # called under self.lock (Handler.handle)
        try:
            self._keep(self.format(record))
        except RecursionError:  # as logging.StreamHandler does
            raise
        except Exception:
            self.handleError(record)

    def emit_line(self, line: str) -> None:
        """Write ``line``, already formatted, as ``emit`` writes a record's.

        Only for a caller that checked :func:`direct_handler`: no filter or other handler would see it.
        """
        with self.lock:  # type: ignore[union-attr]
            self._keep(line)

    def _keep(self, line: str) -> None:
        """Under the lock: keep ``line`` for the loop's next pass, or write it now when no loop runs here."""
        self._kept.append(line)
        loop = asyncio._get_running_loop()  # the C fast path of get_running_loop, None off a loop
        if loop is None:
            self._write_kept()
        elif self._flush_on is not loop:
            self._flush_on = loop
            loop.call_soon(self._write_later)

    def _write_later(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._flush_on = None
            self._write_kept()

    def _write_kept(self) -> None:
        if self._kept:
            text = self.terminator.join(self._kept) + self.terminator
            self._kept.clear()
            self.stream.write(text)
            self.stream.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if self._kept and self.stream and not getattr(self.stream, "closed", False):
                self._write_kept()
            super().flush()

    def close(self) -> None:
        self.flush()
        super().close()


def direct_handler(logger: logging.Logger, level: int) -> LoopBatchingHandler | None:
    """The one handler a record of ``logger`` at ``level`` would reach, when writing to it directly is the same.

    That is: the logger is enabled for ``level``, no logger on the way to the
    root has a filter or another handler, and the handler is a
    :class:`LoopBatchingHandler` with Lichen's :class:`JsonFormatter`, no
    filter and a level at most ``level``. Otherwise ``None``, and the caller
    logs as usual (a test's ``caplog``, a user's own handler see the record).
    """
    if logger.disabled or not logger.isEnabledFor(level):
        return None
    found: logging.Handler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        for handler in current.handlers:
            if found is not None:
                return None
            found = handler
        if not current.propagate:
            break
        current = current.parent
    if (type(found) is LoopBatchingHandler and not found.filters and found.level <= level
            and type(found.formatter) is JsonFormatter):
        return found
    return None


def request_line(formatter: JsonFormatter, created: float, request_id: str, method: str, path: str, endpoint: str,
                 status: int, latency_ms: float, tokens: Mapping[str, Hashed] | None = None,
                 trace_ids: tuple[str, str] | None = None) -> str:
    """The access log's ``request`` line, as ``formatter`` writes the record, built without a record.

    Byte for byte what ``JsonFormatter.format`` gives for ``get_logger("lichen.access").info("request", ...)``
    with these fields (a unit test holds them equal), for a fraction of the cost: the field names are fixed
    and none is a secret, so only the values are encoded (strings as ``json`` encodes them, ASCII-escaped).
    ``tokens``: the hashed fields the request carries (:meth:`lichen.redacting.Redaction.request_fields`).
    """
    static = formatter.static_json
    trace = f',"trace_id":"{trace_ids[0]}","span_id":"{trace_ids[1]}"' if trace_ids else ""
    return (f'{{"ts":"{formatter.timestamp(created)}","level":"info","logger":"{ACCESS_LOGGER}","event":"request"'
            f'{"," if static else ""}{static}{trace},"request_id":{_str(request_id)},"method":{_str(method)},'
            f'"path":{_str(path)},"endpoint":{_str(endpoint)},"status":{int(status)!r},'
            f'"latency_ms":{float(latency_ms)!r}{request_tokens_json(tokens)}}}')


def configure_logging(level: str = "info", stream: IO[str] | None = None,
                      settings: ReplicaSettings | None = None, *, batched: bool = False) -> None:
    """Send every log record (ours, uvicorn's, the user's) as one JSON line to ``stream`` (stderr).

    ``settings`` (default: from the env) give the ``service``/``replica``/``revision`` on every line, and the
    redaction plan every line goes through (``LICHEN_REDACT``, :mod:`lichen.redacting`).
    ``batched`` writes through a :class:`LoopBatchingHandler` (``lichen serve`` does).
    """
    settings = ReplicaSettings.from_env() if settings is None else settings
    handler = LoopBatchingHandler(stream) if batched else None
    configure(level, stream=stream, static_fields=settings.log_fields(), handler=handler,
              redaction=settings.redaction())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
        logger.disabled = False  # an earlier dictConfig may have disabled or muted it
        logger.setLevel(logging.NOTSET)
    logging.getLogger("uvicorn.access").disabled = True  # we log each request ourselves
    if any(where == "query" for _, where, _ in settings.redaction().rules):
        # httpx logs each URL it calls (a query string whole) at info: lichen.client's calls would bypass the rules
        logging.getLogger("httpx").setLevel(logging.WARNING)


def uvicorn_log_config() -> dict[str, Any]:
    """A uvicorn ``log_config`` that leaves logging to :func:`configure_logging`."""
    return {"version": 1, "disable_existing_loggers": False}
