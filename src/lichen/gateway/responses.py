"""How a request handler answers the client: a small responder per request, and the gateway's own answers.

The protocol (:mod:`lichen.gateway.serving`) creates one :class:`Responder`
per request and hands it to the handler with the request, as uvicorn hands a
``RequestResponseCycle`` to an ASGI app: the handler starts the response
(its head), writes body bytes, finishes it, or asks for the connection to
close afterwards; it never touches the connection itself. After the handler
returns, the protocol reads what happened (``started``, ``finished``,
``close_after``): a response that started but did not finish can only be
ended by closing the connection.

A :class:`Denial` is a refusal decided before any upstream is tried
(authentication, rate limits, admission, routing, malformed input), answered
with :meth:`Responder.refuse` as a small JSON body that never names upstream
details.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lichen.gateway.flow_control import FlowControl

REASONS = {
    101: b"Switching Protocols", 200: b"OK", 308: b"Permanent Redirect", 400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden", 404: b"Not Found",
    408: b"Request Timeout", 413: b"Content Too Large", 429: b"Too Many Requests", 431: b"Request Header Fields Too Large",
    500: b"Internal Server Error", 502: b"Bad Gateway", 503: b"Service Unavailable", 504: b"Gateway Timeout",
}
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
CLOSING_STATUSES = frozenset({400, 408, 413, 431})
"""refusals after which the connection cannot be trusted to be in sync: answered, then closed"""


@dataclass(frozen=True, slots=True)
class Denial:
    """A request refused by the gateway itself."""

    status: int
    reason: str
    """counted in ``lichen_gateway_denied_total{reason}`` and logged (never a key or token)"""
    message: str
    """what the client reads"""
    headers: tuple[tuple[bytes, bytes], ...] = ()
    extra: dict[str, Any] | None = None


def error_body(status: int, message: str, request_id: str, extra: dict[str, Any] | None = None) -> bytes:
    return json.dumps({"error": message, "status": status, "request_id": request_id, **(extra or {})}).encode()


class Responder:
    """One request's answer on one client connection (see module docs)."""

    __slots__ = ("flow", "client_ip", "started", "finished", "close_after", "extra_headers", "_switch")

    def __init__(self, flow: FlowControl, client_ip: str, extra_headers: bytes = b"",
                 switch: Callable[[Any], bytes] | None = None) -> None:
        self.flow = flow
        """the client connection's back-pressure (pause reading the request body; couple a replica's reading)"""
        self.client_ip = client_ip
        self.extra_headers = extra_headers
        """header lines added to every response head (HSTS on a TLS listener)"""
        self._switch = switch
        self.started = False
        """the response head was written: nothing can be retried any more"""
        self.finished = False
        """the response is complete"""
        self.close_after = False
        """the connection closes after this response"""

    @property
    def closed(self) -> bool:
        """The client went away."""
        return self.flow.closed

    def continue_(self) -> None:
        """``100 Continue`` for a client that waits before sending its body."""
        if not self.flow.closed:
            self.flow.transport.write(CONTINUE)

    def start(self, data: bytes, *, close: bool = False) -> None:
        """Write the response head (and any body bytes already at hand)."""
        self.started = True
        self.close_after = self.close_after or close
        if self.extra_headers:
            data = data.replace(b"\r\n", b"\r\n" + self.extra_headers, 1)  # right after the status line
        if not self.flow.closed:
            self.flow.transport.write(data)

    def switch(self, head: bytes, tunnel: Any) -> bytes:
        """Answer ``101 Switching Protocols`` with ``head`` and give the connection to ``tunnel``
        (a :class:`lichen.gateway.serving.Tunnel`); returns the bytes the client sent after its request head."""
        assert self._switch is not None
        self.start(head, close=True)
        self.finished = True
        return self._switch(tunnel)

    def write(self, data: bytes) -> None:
        if not self.flow.closed:
            self.flow.transport.write(data)

    def write_chunk(self, data: bytes) -> None:
        """One piece of a body sent with ``Transfer-Encoding: chunked`` (``finish(LAST_CHUNK)`` ends it)."""
        if data and not self.flow.closed:
            self.flow.transport.write(b"%x\r\n%b\r\n" % (len(data), data))

    def finish(self, data: bytes = b"") -> None:
        """Write the last bytes: the response is complete."""
        if data and not self.flow.closed:
            self.flow.transport.write(data)
        self.finished = True

    def send_simple(
        self, status: int, message: str, request_id: str, *, close: bool = False,
        headers: Sequence[tuple[bytes, bytes]] = (), extra: dict[str, Any] | None = None,
        body: bytes | None = None, content_type: bytes = b"application/json",
    ) -> None:
        """A whole response made by the gateway (errors, metrics): small and complete."""
        payload = body if body is not None else error_body(status, message, request_id, extra)
        lines = [
            b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, b"Unknown")),
            b"content-type: %s\r\ncontent-length: %d\r\n" % (content_type, len(payload)),
        ]
        if request_id:
            lines.append(b"x-request-id: %s\r\n" % request_id.encode())
        for name, value in headers:
            lines.append(b"%s: %s\r\n" % (name, value))
        if close:
            lines.append(b"connection: close\r\n")
        lines.append(b"\r\n")
        lines.append(payload)
        self.start(b"".join(lines), close=close)
        self.finished = True

    def refuse(self, denial: Denial, request_id: str) -> None:
        self.send_simple(denial.status, denial.message, request_id, close=denial.status in CLOSING_STATUSES,
                         headers=denial.headers, extra=denial.extra)
