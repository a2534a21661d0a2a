"""A replica's logs: Lichen's one log style (:mod:`lichen.logs`), one line per request.

Every line is one JSON object: ``ts``, ``level``, ``logger``, ``event``,
then ``service``, ``replica`` and ``revision`` from the replica contract
(:class:`~lichen.sdk.settings.ReplicaSettings`, env ``LICHEN_SERVICE``,
``LICHEN_REPLICA``, ``LICHEN_REVISION``) when set, then the event's fields.
Each request writes one ``request`` event from logger ``lichen.access``
(``request_id``, ``method``, ``path``, ``endpoint``, ``status``,
``latency_ms``). A line logged while a request is being handled (also from a
sync handler's thread) gets that request's id.
"""

from __future__ import annotations

import logging
from typing import IO, Any

from lichen.logs import REQUEST_ID, JsonFormatter, configure
from lichen.sdk.settings import ReplicaSettings

__all__ = ["ACCESS_LOGGER", "REQUEST_ID", "JsonFormatter", "configure_logging", "current_request_id",
           "uvicorn_log_config"]

ACCESS_LOGGER = "lichen.access"


def current_request_id() -> str | None:
    """The id of the request being handled in this context, if any."""
    return REQUEST_ID.get()


def configure_logging(level: str = "info", stream: IO[str] | None = None,
                      settings: ReplicaSettings | None = None) -> None:
    """Send every log record (ours, uvicorn's, the user's) as one JSON line to ``stream`` (stderr).

    ``settings`` (default: from the env) give the ``service``/``replica``/``revision`` on every line.
    """
    settings = ReplicaSettings.from_env() if settings is None else settings
    configure(level, stream=stream, static_fields=settings.log_fields())
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
