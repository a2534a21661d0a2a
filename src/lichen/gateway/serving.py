"""The client side of the gateway: an asyncio protocol that parses HTTP/1.1 with httptools.

It enforces the header and body size limits (431, 413), the header read
timeout and the request-body idle timeout (408, against slowloris on heads and
bodies) and the keep-alive idle timeout, and answers malformed requests with
400 and a closed connection. It knows nothing of
routing or upstreams: each parsed request goes to a :class:`Front` (the
gateway: :class:`lichen.gateway.proxying.Gateway`) as
``front.handle(request, responder)``, one at a time per connection
(pipelined requests wait their turn), and the handler answers only through
its :class:`~lichen.gateway.responses.Responder`. A request body arrives
later, chunk by chunk, into its :class:`~lichen.gateway.requests.RequestBody`.

A WebSocket upgrade (``Connection: Upgrade``, ``Upgrade: websocket``) is
handed over like any request, with ``request.upgrade`` set and nothing more
parsed; a handler that gets ``101`` from a replica calls
:meth:`~lichen.gateway.responses.Responder.switch` with a :class:`Tunnel`, and
from then on every byte the client sends goes to it unparsed.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

import httptools

from lichen.gateway.flow_control import FlowControl
from lichen.gateway.requests import Request
from lichen.gateway.responses import Denial, Responder

_INTERESTING = {
    b"host": "host", b"x-request-id": "request_id", b"authorization": "authorization", b"x-api-key": "api_key",
    b"x-lichen-revision": "pinned", b"expect": "expect", b"content-length": "content_length",
    b"transfer-encoding": "transfer_encoding", b"upgrade": "upgrade_header", b"traceparent": "traceparent",
}
MAX_PIPELINED = 16
LINGER_S = 2.0
SWEEP_S = 0.25
LINGER_MAX_BYTES = 16 * 1024 * 1024
MAX_UNSENT_BODY = 1024 * 1024
_REASONS_BY_STATUS = {400: "malformed_request", 408: "header_timeout", 413: "body_too_large", 431: "headers_too_large"}
BODY_TIMEOUT_MESSAGE = "request body not received in time"


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_header_bytes: int = 16 * 1024
    max_body_bytes: int = 10 * 1024 * 1024
    header_timeout_s: float = 10.0
    idle_timeout_s: float = 75.0
    body_idle_timeout_s: float = 10.0


class Front(Protocol):
    """What the protocol needs from the application behind it."""

    limits: ConnectionLimits

    def handle(self, request: Request, responder: Responder) -> Coroutine[Any, Any, None]:
        """Answer one request through ``responder``."""

    def refuse(self, responder: Responder, request: Request | None, denial: Denial, request_id: str = "") -> None:
        """Count, log and answer a request the protocol refused (malformed, too large, too slow)."""

    def log_exception(self, message: str, exc: BaseException | None) -> None: ...


class Tunnel(Protocol):
    """Where a switched connection's bytes go (:mod:`lichen.gateway.tunnels`)."""

    def from_client(self, data: bytes) -> None: ...


class LimitExceeded(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def sweep_deadlines(connections: set[ClientConnection], loop: asyncio.AbstractEventLoop) -> None:
    """Fire each connection's deadline once it has passed (precision ``SWEEP_S``)."""
    while True:
        await asyncio.sleep(SWEEP_S)
        now = loop.time()
        for conn in [c for c in connections if c.on_deadline is not None and now >= c.deadline]:
            callback = conn.on_deadline
            conn.on_deadline = None
            if callback is not None:
                callback()


class ClientConnection(asyncio.Protocol):
    def __init__(self, front: Front, connections: set[ClientConnection], loop: asyncio.AbstractEventLoop, *,
                 https: bool = False, response_headers: bytes = b"") -> None:
        self.front = front
        self.https = https
        """a TLS listener's: upstream requests say ``X-Forwarded-Proto: https`` (a client's own is dropped)"""
        self.response_headers = response_headers
        """header lines every response on this connection carries (HSTS)"""
        self.connections = connections
        self.loop = loop
        self.parser = httptools.HttpRequestParser(self)
        self.transport: Any = None
        self.flow: FlowControl = FlowControl(None)
        self.client_ip = ""
        self.parsing: Request | None = None
        self.active: Request | None = None
        self.responder: Responder | None = None
        self.queue: deque[Request] = deque()
        self.task: asyncio.Task[None] | None = None
        self.closed = False
        self.close_after = False
        # One deadline per connection (idle, header read, lingering close), checked by the gateway's
        # sweeper every SWEEP_S instead of a timer armed and cancelled per request.
        self.deadline = 0.0
        self.on_deadline: Callable[[], None] | None = None
        self.header_bytes = 0
        self.discarding = 0  # > 0 once an error answer was sent: read and drop what the client still sends
        self.in_head = True  # between the end of one message and the end of the next one's headers
        self.head_bytes_seen = 0
        self.body_watch = False  # the deadline is the request body's idle timeout
        self.tunnel: Tunnel | None = None  # set once switched (WebSocket): bytes go there unparsed
        self.upgrade_tail = b""  # bytes after an upgrade request's head, for the tunnel
        self.switcher = self._switch  # bound once: every Responder gets it, a handler uses it for an upgrade

    # ------------------------------------------------------------ asyncio
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.flow = FlowControl(transport)
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if peer else ""
        self.connections.add(self)
        self._arm(self.front.limits.idle_timeout_s, self._on_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = self.flow.closed = True
        self.connections.discard(self)
        self.on_deadline = None
        if self.task is not None:
            self.task.cancel()

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.from_client(data)
            return
        if self.discarding:
            self.discarding += len(data)
            if self.discarding > LINGER_MAX_BYTES:
                self.transport.close()
            return
        if self.in_head:
            self.head_bytes_seen += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            request = self.parsing
            if (request is not None and (request is self.active or request in self.queue) and request.method == "GET"
                    and request.upgrade_header is not None and request.upgrade_header.lower() == b"websocket"):
                request.upgrade = True  # the handler decides; nothing after its head is parsed
                self.upgrade_tail = data[exc.args[0]:] if exc.args and isinstance(exc.args[0], int) else b""
                if not request.body.done:
                    request.body.finish()
                self.close_after = True
                self.body_watch = False
                self.flow.pause_reading()
            elif request is not None and (request is self.active or request in self.queue) and request.method != "CONNECT":
                # An optional upgrade (h2c, websocket): answer over HTTP/1.1 without it, then close.
                if not request.body.done:
                    request.body.finish()
                self.close_after = True
                self.flow.pause_reading()
            else:
                self._fail(400, "protocol upgrades are not supported by the gateway")
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, LimitExceeded):
                self._fail(cause.status, str(cause))
            else:
                self.front.log_exception("request parsing failed", cause)
                self._fail(400, "malformed HTTP request")
        except httptools.HttpParserError:
            self._fail(400, "malformed HTTP request")
        else:
            # httptools buffers a header line until it ends, so count raw bytes too: still inside the headers
            # after this chunk, and past the limit (+64 KiB), an endless header line is cut off.
            if self.in_head and self.head_bytes_seen > self.front.limits.max_header_bytes + 65536 and not self.close_after:
                self._fail(431, "request headers are larger than the limit")

    def pause_writing(self) -> None:
        self.flow.pause_writing()

    def resume_writing(self) -> None:
        self.flow.resume_writing()

    # ------------------------------------------------------------ httptools
    def on_message_begin(self) -> None:
        self.parsing = Request()
        self.header_bytes = 0
        if self.task is None:
            self._arm(self.front.limits.header_timeout_s, self._on_header_timeout)

    def on_url(self, url: bytes) -> None:
        request = self.parsing
        assert request is not None
        request.url += url
        self.header_bytes += len(url)
        if self.header_bytes > self.front.limits.max_header_bytes:
            raise LimitExceeded(431, "request line and headers are larger than the limit")

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self.parsing
        assert request is not None
        self.header_bytes += len(name) + len(value) + 4
        if self.header_bytes > self.front.limits.max_header_bytes:
            raise LimitExceeded(431, "request headers are larger than the limit")
        lname = name.lower()
        attribute = _INTERESTING.get(lname)
        if attribute is not None:
            setattr(request, attribute, value)
        elif self.https and lname == b"x-forwarded-proto":
            return  # the gateway says which scheme the client used
        request.headers.append((lname, value))

    def on_headers_complete(self) -> None:
        request = self.parsing
        assert request is not None
        parser = self.parser
        request.method = parser.get_method().decode("ascii", "replace")
        request.http11 = parser.get_http_version() == "1.1"
        request.keep_alive = parser.should_keep_alive()
        request.chunked = request.transfer_encoding is not None and b"chunked" in request.transfer_encoding.lower()
        if self.https:
            request.headers.append((b"x-forwarded-proto", b"https"))
        self.in_head = False
        if self.task is None:
            self.on_deadline = None
        if request.content_length is not None:
            try:
                declared = int(request.content_length)
            except ValueError:
                raise LimitExceeded(400, "invalid Content-Length") from None
            if declared > self.front.limits.max_body_bytes:
                raise LimitExceeded(413, "request body is larger than the limit")
        self.queue.append(request)
        if len(self.queue) > MAX_PIPELINED:
            self.flow.pause_reading()
        self._dispatch()
        if request.has_body and not self.discarding:
            self._arm(self.front.limits.body_idle_timeout_s, self._on_body_idle)
            self.body_watch = True  # until the body is complete: a client that stops sending it gets 408

    def on_body(self, data: bytes) -> None:
        request = self.parsing
        assert request is not None
        body = request.body
        if body.size + len(data) > self.front.limits.max_body_bytes:
            raise LimitExceeded(413, "request body is larger than the limit")
        body.feed(data)
        if self.body_watch:
            self.deadline = self.loop.time() + self.front.limits.body_idle_timeout_s
        if not body.attached and body.size > MAX_UNSENT_BODY:
            self.flow.pause_reading()

    def on_message_complete(self) -> None:
        self.in_head = True
        self.head_bytes_seen = 0
        if self.body_watch:
            self.body_watch = False
            self.on_deadline = None
        request = self.parsing
        if request is not None:
            request.body.finish()

    # ------------------------------------------------------------ deadlines and failures
    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        self.deadline = self.loop.time() + delay
        self.on_deadline = callback
        self.body_watch = False

    def _on_body_idle(self) -> None:
        """No body byte for body_idle_timeout_s: 408 and close, unless the gateway itself stopped reading
        (back-pressure from a slow replica, or a body waiting for one): then the wait starts again."""
        if self.closed or not self.body_watch:
            return
        if self.flow.reading_paused:
            self._arm(self.front.limits.body_idle_timeout_s, self._on_body_idle)
            self.body_watch = True
            return
        self.body_watch = False
        self._fail(408, BODY_TIMEOUT_MESSAGE, "body_timeout")

    def _on_idle(self) -> None:
        if self.task is None and not self.closed:
            self.transport.close()

    def _on_header_timeout(self) -> None:
        if self.task is None and not self.closed:
            self._refuse(None, 408, "request headers not received in time")

    def _fail(self, status: int, message: str, reason: str = "") -> None:
        """A request could not be parsed or broke a limit: answer it (if nothing else is being answered) and close."""
        self.close_after = True
        self.flow.pause_reading()
        request = self.parsing
        if request is not None and request is self.active and self.task is not None:
            request.body.fail(status)  # the handler answers (or closes) once it sees the broken body
            return
        if self.task is not None:
            return  # a pipelined follower is broken: finish the current response, then close
        self._refuse(request, status, message, reason)

    def _refuse(self, request: Request | None, status: int, message: str, reason: str = "") -> None:
        """Answer a request the protocol itself refuses (nothing else is being answered), then close."""
        if self.closed:
            return
        responder = Responder(self.flow, self.client_ip, self.response_headers)
        denial = Denial(status, reason or _REASONS_BY_STATUS.get(status, "malformed_request"), message)
        self.front.refuse(responder, request, denial)
        self.linger_close()

    def linger_close(self) -> None:
        """Close after an answer without losing it: send FIN, then read and drop input briefly.

        Closing a socket with unread input makes the kernel send a reset, which
        can destroy the error answer before the client reads it (nginx's
        lingering close solves the same problem).
        """
        if self.closed:
            return
        try:
            self.transport.write_eof()
        except (OSError, RuntimeError, NotImplementedError):
            self.transport.close()
            return
        self.discarding = 1
        self.flow.resume_reading()
        self._arm(LINGER_S, self._close_now)

    def _close_now(self) -> None:
        if not self.closed:
            self.transport.close()

    # ------------------------------------------------------------ one request at a time
    def _dispatch(self) -> None:
        if self.task is None and self.queue and not self.closed:
            request = self.queue.popleft()
            self.active = request
            responder = self.responder = Responder(self.flow, self.client_ip, self.response_headers, self.switcher)
            self.task = self.loop.create_task(self.front.handle(request, responder))
            self.task.add_done_callback(self._on_done)

    def _switch(self, tunnel: Tunnel) -> bytes:
        """From now on the client's bytes go to ``tunnel``; returns those that came after the upgrade's head."""
        self.tunnel = tunnel
        self.close_after = True
        tail, self.upgrade_tail = self.upgrade_tail, b""
        self.flow.resume_reading()
        return tail

    def _on_done(self, task: asyncio.Task[None]) -> None:
        self.task = None
        request, responder = self.active, self.responder
        self.active = self.responder = None
        self.flow.feed_from(None)
        if self.closed:
            return
        if not task.cancelled() and task.exception() is not None:
            self.front.log_exception("request handler failed", task.exception())
            if responder is not None and not responder.started:
                responder.send_simple(500, "internal gateway error", "", close=True)
            self.transport.close()
            return
        unfinished = responder is None or (responder.started and not responder.finished)
        if (self.close_after or unfinished or (responder is not None and responder.close_after) or request is None
                or not request.keep_alive or not request.body.done):
            self.linger_close()  # a response cut short can only end with the connection
            return
        if self.queue:
            self._dispatch()
        else:
            self.flow.resume_reading()
            self._arm(self.front.limits.idle_timeout_s, self._on_idle)
