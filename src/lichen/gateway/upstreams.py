"""Upstream replicas as the gateway sees them: live state, pooled keep-alive connections, one exchange at a time.

An :class:`UpstreamConnection` is an asyncio protocol that parses responses
with httptools and hands each piece to its current :class:`Exchange`. Body
bytes go straight to the client as they arrive (no buffering of whole
bodies), so Server-Sent Events pass through as they are produced.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httptools

from lichen.control.outliers import OutlierState
from lichen.gateway.configs import Endpoint
from lichen.gateway.flow_control import FlowControl

POOL_IDLE_S = 4.0  # below uvicorn's 5 s keep-alive, so a pooled connection is rarely closed under us
POOL_MAX_IDLE = 256


class UpstreamReset(Exception):
    """The upstream closed or broke the connection before the response was complete."""


class RequestBodyError(Exception):
    """The client's request body broke a limit or the chunked framing while it was being forwarded."""


class UpstreamState:
    """One replica: where it is, its outstanding requests, its passive health, and its idle connections."""

    __slots__ = ("service", "endpoint", "id", "revision", "host", "port", "ready", "outstanding", "outlier", "idle",
                 "retired")

    def __init__(self, service: str, endpoint: Endpoint) -> None:
        self.service = service
        self.endpoint = endpoint
        self.id = endpoint.id
        self.revision = endpoint.revision
        self.host, self.port = endpoint.host_port
        self.ready = endpoint.ready
        self.outstanding = 0
        self.outlier = OutlierState()
        self.idle: list[UpstreamConnection] = []
        self.retired = False
        """dropped from the config (a planned stop): its connections are not pooled, its failures not counted"""

    def update(self, endpoint: Endpoint) -> None:
        """New metadata (readiness, revision, replica id) for the same address: health, counts and pool stay."""
        self.endpoint = endpoint
        self.id = endpoint.id
        self.revision = endpoint.revision
        self.ready = endpoint.ready

    def retire(self) -> None:
        """The replica left the config: close its idle connections and pool none again."""
        self.retired = True
        self.close_idle()

    def close_idle(self) -> None:
        while self.idle:
            conn = self.idle.pop()
            if conn.transport is not None:
                conn.transport.close()


class Exchange:
    """One request/response on an upstream connection, buffered only until the gateway decides to forward it."""

    __slots__ = (
        "head", "done", "status", "reason", "headers", "pending", "forward", "complete", "keep_alive",
        "is_head", "content_length", "body_bytes", "chunked", "event_stream", "held_bytes", "hold_limit", "hold_full",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, is_head: bool) -> None:
        self.head: asyncio.Future[int] = loop.create_future()
        self.done: asyncio.Future[bool] = loop.create_future()
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.pending: list[bytes] = []
        self.forward: Callable[[bytes], None] | None = None
        self.complete = False
        self.keep_alive = False
        self.is_head = is_head
        self.content_length = False
        self.body_bytes = -1  # the Content-Length value, -1 when absent or unreadable
        self.chunked = False
        self.event_stream = False  # text/event-stream: never held back
        self.held_bytes = 0  # body bytes buffered before forwarding started
        self.hold_limit = 0
        self.hold_full: asyncio.Future[None] | None = None  # resolved once held_bytes passes hold_limit

    def time_out(self) -> None:
        """The deadline passed before the response head arrived (a timer calls this)."""
        if not self.head.done():
            self.head.set_exception(TimeoutError())

    def start_forwarding(self, forward: Callable[[bytes], None]) -> None:
        """Send what arrived so far, then every later chunk as it comes."""
        for chunk in self.pending:
            forward(chunk)
        self.pending = []
        self.forward = forward
        if self.complete and not self.done.done():
            self.done.set_result(self.keep_alive)


class UpstreamConnection(asyncio.Protocol):
    __slots__ = ("state", "transport", "flow", "parser", "exchange", "closed", "last_used")

    def __init__(self, state: UpstreamState) -> None:
        self.state = state
        self.transport: Any = None
        self.flow = FlowControl(None)
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: Exchange | None = None
        self.closed = False
        self.last_used = 0.0

    # -------------------------------------------------------- asyncio
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.flow = FlowControl(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = self.flow.closed = True
        exchange = self.exchange
        if exchange is None:
            return
        if not exchange.head.done():
            exchange.head.set_exception(UpstreamReset("connection closed before the response"))
        elif not exchange.done.done():
            if not exchange.content_length and not exchange.chunked and exchange.forward is not None:
                exchange.complete = True  # a close-delimited body ends with the connection
                exchange.done.set_result(False)
            elif not exchange.content_length and not exchange.chunked:
                exchange.complete = True  # a close-delimited body that was being held: it is whole
                exchange.keep_alive = False
                exchange.done.set_result(False)
            else:
                exchange.done.set_exception(UpstreamReset("connection closed mid-response"))

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            exchange = self.exchange
            if exchange is not None:
                error = UpstreamReset("malformed response from upstream")
                if not exchange.head.done():
                    exchange.head.set_exception(error)
                elif not exchange.done.done():
                    exchange.done.set_exception(error)
            self.closed = self.flow.closed = True
            self.transport.close()

    def pause_writing(self) -> None:
        self.flow.pause_writing()

    def resume_writing(self) -> None:
        self.flow.resume_writing()

    # -------------------------------------------------------- httptools
    def on_status(self, status: bytes) -> None:
        if self.exchange is not None:
            self.exchange.reason = status

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.exchange is not None:
            self.exchange.headers.append((name, value))

    def on_headers_complete(self) -> None:
        exchange = self.exchange
        if exchange is None:
            return
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            exchange.headers = []  # an interim response (100 Continue): wait for the real one
            return
        exchange.status = status
        exchange.keep_alive = self.parser.should_keep_alive()
        for name, value in exchange.headers:
            lname = name.lower()
            if lname == b"content-length":
                exchange.content_length = True
                try:
                    exchange.body_bytes = int(value)
                except ValueError:
                    exchange.body_bytes = -1
            elif lname == b"transfer-encoding" and b"chunked" in value.lower():
                exchange.chunked = True
            elif lname == b"content-type" and value.lower().startswith(b"text/event-stream"):
                exchange.event_stream = True
        if exchange.is_head or status in (204, 304):
            exchange.complete = True
            exchange.keep_alive = False if exchange.is_head else exchange.keep_alive
        if not exchange.head.done():
            exchange.head.set_result(status)
        if exchange.complete and exchange.forward is not None and not exchange.done.done():
            exchange.done.set_result(exchange.keep_alive)

    def on_body(self, body: bytes) -> None:
        exchange = self.exchange
        if exchange is None or exchange.complete:
            return
        if exchange.forward is not None:
            exchange.forward(body)
        else:
            exchange.pending.append(body)
            exchange.held_bytes += len(body)
            full = exchange.hold_full
            if full is not None and exchange.held_bytes > exchange.hold_limit and not full.done():
                full.set_result(None)

    def on_message_complete(self) -> None:
        exchange = self.exchange
        if exchange is None or exchange.status == 0:
            return
        exchange.complete = True
        if not exchange.done.done():  # also when buffering a small body before forwarding it
            exchange.done.set_result(exchange.keep_alive)

    # -------------------------------------------------------- use
    def begin(self, exchange: Exchange) -> None:
        self.exchange = exchange


class BodyWriter:
    """Writes the rest of a request body to the replica as the client sends it (a ``requests.BodySink``)."""

    __slots__ = ("transport", "chunked", "exchange")

    def __init__(self, conn: UpstreamConnection, chunked: bool) -> None:
        self.transport, self.chunked, self.exchange = conn.transport, chunked, conn.exchange

    def write(self, chunk: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if self.chunked else chunk)

    def end(self) -> None:
        if self.chunked and not self.transport.is_closing():
            self.transport.write(LAST_CHUNK)

    def abort(self) -> None:
        exchange = self.exchange
        if exchange is not None and not exchange.head.done():
            exchange.head.set_exception(RequestBodyError())


LAST_CHUNK = b"0\r\n\r\n"


def take_idle_connection(state: UpstreamState, now: float) -> UpstreamConnection | None:
    """The most recently used pooled connection that is still open and fresh, if any (stale ones are closed)."""
    idle = state.idle
    while idle:
        conn = idle.pop()
        if not conn.closed and now - conn.last_used < POOL_IDLE_S:
            return conn
        conn.closed = conn.flow.closed = True
        conn.transport.close()
    return None


async def open_connection(
    loop: asyncio.AbstractEventLoop, state: UpstreamState, connect_timeout_s: float
) -> UpstreamConnection:
    """A new connection; raises OSError/TimeoutError on connect failure."""
    _, conn = await asyncio.wait_for(
        loop.create_connection(lambda: UpstreamConnection(state), state.host, state.port), connect_timeout_s
    )
    return conn


def release_connection(conn: UpstreamConnection, now: float, reusable: bool) -> None:
    """Back to the pool when the exchange finished cleanly, else closed."""
    conn.exchange = None
    conn.flow.feed_from(None)
    conn.flow.resume_reading()
    if reusable and not conn.closed and not conn.state.retired and len(conn.state.idle) < POOL_MAX_IDLE:
        conn.last_used = now
        conn.state.idle.append(conn)
    else:
        conn.closed = conn.flow.closed = True
        if conn.transport is not None:
            conn.transport.close()
