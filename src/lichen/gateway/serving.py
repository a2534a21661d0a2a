"""The client side of the gateway: an asyncio protocol that parses HTTP/1.1 with httptools.

It enforces the header and body size limits (431, 413), the header read
timeout (408, against slowloris), the keep-alive idle timeout, and answers
malformed requests with 400 and a closed connection. Each parsed request is
handed to :meth:`lichen.gateway.proxying.Gateway.handle`, one at a time per
connection (pipelined requests wait their turn).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httptools

if TYPE_CHECKING:
    from lichen.gateway.proxying import Gateway

REASONS = {
    200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden", 404: b"Not Found",
    408: b"Request Timeout", 413: b"Content Too Large", 429: b"Too Many Requests", 431: b"Request Header Fields Too Large",
    500: b"Internal Server Error", 502: b"Bad Gateway", 503: b"Service Unavailable", 504: b"Gateway Timeout",
}

_INTERESTING = {
    b"host": "host", b"x-request-id": "request_id", b"authorization": "authorization", b"x-api-key": "api_key",
    b"x-lichen-revision": "pinned", b"expect": "expect", b"content-length": "content_length",
    b"transfer-encoding": "transfer_encoding",
}
MAX_PIPELINED = 16
LINGER_S = 2.0
SWEEP_S = 0.25
LINGER_MAX_BYTES = 16 * 1024 * 1024
MAX_UNSENT_BODY = 1024 * 1024


class LimitExceeded(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Request:
    """One parsed request; its body arrives later, chunk by chunk, and is forwarded through ``sink``."""

    __slots__ = (
        "url", "method", "headers", "http11", "keep_alive", "host", "request_id", "authorization", "api_key",
        "pinned", "expect", "content_length", "transfer_encoding", "chunked", "chunks", "body_size",
        "replay_ok", "body_done", "body_error", "sink", "reject", "on_body_error",
    )

    REPLAY_LIMIT = 64 * 1024

    def __init__(self) -> None:
        self.url = b""
        self.method = "GET"
        self.headers: list[tuple[bytes, bytes]] = []
        self.http11 = True
        self.keep_alive = True
        self.host: bytes | None = None
        self.request_id: bytes | None = None
        self.authorization: bytes | None = None
        self.api_key: bytes | None = None
        self.pinned: bytes | None = None
        self.expect: bytes | None = None
        self.content_length: bytes | None = None
        self.transfer_encoding: bytes | None = None
        self.chunked = False
        self.chunks: list[bytes] = []
        self.body_size = 0
        self.replay_ok = True
        self.body_done = False
        self.body_error = 0
        self.sink: Callable[[bytes | None], None] | None = None
        self.reject: tuple[int, str] | None = None
        self.on_body_error: Callable[[], None] | None = None

    @property
    def has_body(self) -> bool:
        return self.chunked or (self.content_length is not None and self.content_length.strip() not in (b"", b"0"))

    def feed(self, chunk: bytes) -> None:
        self.body_size += len(chunk)
        sink = self.sink
        if sink is not None:
            sink(chunk)
            if self.replay_ok:
                self.chunks.append(chunk)
                if self.body_size > self.REPLAY_LIMIT:
                    self.replay_ok = False
                    self.chunks = []
        else:
            self.chunks.append(chunk)
            if self.body_size > self.REPLAY_LIMIT:
                self.replay_ok = False

    def finish(self) -> None:
        self.body_done = True
        if self.sink is not None:
            self.sink(None)


def error_body(status: int, message: str, request_id: str, extra: dict[str, Any] | None = None) -> bytes:
    return json.dumps({"error": message, "status": status, "request_id": request_id, **(extra or {})}).encode()


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
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.loop = gateway.loop
        self.parser = httptools.HttpRequestParser(self)
        self.transport: Any = None
        self.client_ip = ""
        self.parsing: Request | None = None
        self.active: Request | None = None
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
        self.reading_paused = False
        self.writing_paused = False
        self.response_started = False
        self.on_writable: list[Callable[[], None]] = []
        self.on_unwritable: list[Callable[[], None]] = []

    # ------------------------------------------------------------ asyncio
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if peer else ""
        self.gateway.connections.add(self)
        self._arm(self.gateway.config.idle_timeout_s, self._on_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.gateway.connections.discard(self)
        self.on_deadline = None
        if self.task is not None:
            self.task.cancel()

    def data_received(self, data: bytes) -> None:
        if self.discarding:
            self.discarding += len(data)
            if self.discarding > LINGER_MAX_BYTES:
                self.transport.close()
            return
        if self.in_head:
            self.head_bytes_seen += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            request = self.parsing
            if request is not None and (request is self.active or request in self.queue) and request.method != "CONNECT":
                # An optional upgrade (h2c, websocket): answer over HTTP/1.1 without it, then close.
                if not request.body_done:
                    request.finish()
                self.close_after = True
                self.pause_reading()
            else:
                self._fail(400, "protocol upgrades are not supported by the gateway")
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, LimitExceeded):
                self._fail(cause.status, str(cause))
            else:
                self.gateway.log_exception("request parsing failed", cause)
                self._fail(400, "malformed HTTP request")
        except httptools.HttpParserError:
            self._fail(400, "malformed HTTP request")
        else:
            # httptools buffers a header line until it ends, so count raw bytes too: still inside the headers
            # after this chunk, and past the limit (+64 KiB), an endless header line is cut off.
            if self.in_head and self.head_bytes_seen > self.gateway.max_header_bytes + 65536 and not self.close_after:
                self._fail(431, "request headers are larger than the limit")

    def pause_writing(self) -> None:
        self.writing_paused = True
        for callback in self.on_unwritable:
            callback()

    def resume_writing(self) -> None:
        self.writing_paused = False
        for callback in self.on_writable:
            callback()

    # ------------------------------------------------------------ httptools
    def on_message_begin(self) -> None:
        self.parsing = Request()
        self.header_bytes = 0
        if self.task is None:
            self._arm(self.gateway.config.header_timeout_s, self._on_header_timeout)

    def on_url(self, url: bytes) -> None:
        request = self.parsing
        assert request is not None
        request.url += url
        self.header_bytes += len(url)
        if self.header_bytes > self.gateway.max_header_bytes:
            raise LimitExceeded(431, "request line and headers are larger than the limit")

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self.parsing
        assert request is not None
        self.header_bytes += len(name) + len(value) + 4
        if self.header_bytes > self.gateway.max_header_bytes:
            raise LimitExceeded(431, "request headers are larger than the limit")
        lname = name.lower()
        attribute = _INTERESTING.get(lname)
        if attribute is not None:
            setattr(request, attribute, value)
        request.headers.append((lname, value))

    def on_headers_complete(self) -> None:
        request = self.parsing
        assert request is not None
        parser = self.parser
        request.method = parser.get_method().decode("ascii", "replace")
        request.http11 = parser.get_http_version() == "1.1"
        request.keep_alive = parser.should_keep_alive()
        request.chunked = request.transfer_encoding is not None and b"chunked" in request.transfer_encoding.lower()
        self.in_head = False
        if self.task is None:
            self.on_deadline = None
        if request.content_length is not None:
            try:
                declared = int(request.content_length)
            except ValueError:
                raise LimitExceeded(400, "invalid Content-Length") from None
            if declared > self.gateway.max_body_bytes:
                raise LimitExceeded(413, "request body is larger than the limit")
        self.queue.append(request)
        if len(self.queue) > MAX_PIPELINED:
            self.pause_reading()
        self._dispatch()

    def on_body(self, body: bytes) -> None:
        request = self.parsing
        assert request is not None
        if request.body_size + len(body) > self.gateway.max_body_bytes:
            raise LimitExceeded(413, "request body is larger than the limit")
        request.feed(body)
        if request.sink is None and request.body_size > MAX_UNSENT_BODY:
            self.pause_reading()

    def on_message_complete(self) -> None:
        self.in_head = True
        self.head_bytes_seen = 0
        request = self.parsing
        if request is not None:
            request.finish()

    # ------------------------------------------------------------ flow
    def pause_reading(self) -> None:
        if not self.reading_paused and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        self.deadline = self.loop.time() + delay
        self.on_deadline = callback

    def _on_idle(self) -> None:
        if self.task is None and not self.closed:
            self.transport.close()

    def _on_header_timeout(self) -> None:
        if self.task is None and not self.closed:
            self.gateway.deny(self, None, 408, "header_timeout", "request headers not received in time")

    def _fail(self, status: int, message: str) -> None:
        """A request could not be parsed or broke a limit: answer it (if nothing else is being answered) and close."""
        self.close_after = True
        self.pause_reading()
        request = self.parsing
        if request is not None and request is self.active and self.task is not None:
            request.body_error = status  # the handler answers (or closes) once it sees the broken body
            if request.on_body_error is not None:
                request.on_body_error()
            return
        if self.task is not None:
            return  # a pipelined follower is broken: finish the current response, then close
        reason = {400: "malformed_request", 413: "body_too_large", 431: "headers_too_large"}.get(status, "malformed_request")
        self.gateway.deny(self, request, status, reason, message)

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
        if self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()
        self._arm(LINGER_S, self._close_now)

    def _close_now(self) -> None:
        if not self.closed:
            self.transport.close()

    def _dispatch(self) -> None:
        if self.task is None and self.queue and not self.closed:
            request = self.queue.popleft()
            self.active = request
            self.response_started = False
            self.task = self.loop.create_task(self.gateway.handle(self, request))
            self.task.add_done_callback(self._on_done)

    def _on_done(self, task: asyncio.Task[None]) -> None:
        self.task = None
        request = self.active
        self.active = None
        self.on_writable.clear()
        self.on_unwritable.clear()
        if self.closed:
            return
        if not task.cancelled() and task.exception() is not None:
            self.gateway.log_exception("request handler failed", task.exception())
            if not self.response_started:
                self.send_simple(500, "internal gateway error", "", close=True)
            self.transport.close()
            return
        if self.close_after or request is None or not request.keep_alive or not request.body_done:
            self.linger_close()
            return
        if self.queue:
            self._dispatch()
        else:
            self.resume_reading()
            self._arm(self.gateway.config.idle_timeout_s, self._on_idle)

    # ------------------------------------------------------------ writing
    def write(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)

    def send_simple(
        self, status: int, message: str, request_id: str, *, close: bool = False,
        headers: list[tuple[bytes, bytes]] | None = None, extra: dict[str, Any] | None = None,
        body: bytes | None = None, content_type: bytes = b"application/json",
    ) -> None:
        """A response made by the gateway itself (errors, metrics): small, complete, never upstream details."""
        if self.closed:
            return
        payload = body if body is not None else error_body(status, message, request_id, extra)
        lines = [
            b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, b"Unknown")),
            b"content-type: %s\r\ncontent-length: %d\r\n" % (content_type, len(payload)),
        ]
        if request_id:
            lines.append(b"x-request-id: %s\r\n" % request_id.encode())
        for name, value in headers or ():
            lines.append(b"%s: %s\r\n" % (name, value))
        if close:
            self.close_after = True
            lines.append(b"connection: close\r\n")
        lines.append(b"\r\n")
        lines.append(payload)
        self.response_started = True
        self.transport.write(b"".join(lines))
        if close and self.task is None:
            self.linger_close()
