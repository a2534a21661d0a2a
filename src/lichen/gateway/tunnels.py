"""WebSocket passthrough: the upgrade goes to one replica, and after its ``101`` bytes are piped both ways.

The gateway does not speak the WebSocket protocol: it forwards the client's
upgrade request (authenticated and rate-limited like any request, routed and
balanced the same way), relays the replica's answer, and once that is
``101 Switching Protocols`` copies bytes in both directions with back-pressure
(:mod:`lichen.gateway.flow_control`; what the replica sent behind its 101
before the pipe started goes to the client first) until either side closes
or no byte has moved either way for ``gateway.websockets.idle_timeout_s``. At most
``gateway.websockets.max_connections`` are open at once; one more upgrade is
answered 503 before any replica sees it. A WebSocket is not a request in
flight: it takes no ``max_inflight`` slot, and the request metrics observe
its handshake, not its lifetime.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httptools

from lichen.gateway.flow_control import FlowControl
from lichen.gateway.heads import HOP_BY_HOP
from lichen.gateway.metrics import GatewayMetrics
from lichen.gateway.requests import Request
from lichen.gateway.responses import REASONS, Denial, Responder
from lichen.gateway.tables import ServiceTable
from lichen.gateway.upstreams import UpstreamState
from lichen.spec.gateways import WebSocketSpec

MAX_REFUSAL_BYTES = 1024 * 1024
"""a replica's non-101 answer to an upgrade is relayed whole up to this size, else 502"""
MAX_EARLY_BYTES = 1024 * 1024
"""bytes a replica sends after its 101 before the tunnel is piped are held up to this size, then it is not read"""


def over_limit(open_now: int, max_connections: int) -> bool:
    return open_now >= max_connections


class TunnelUpstream(asyncio.Protocol):
    """The replica's side of one WebSocket: its answer to the upgrade parsed, then its bytes piped on."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.transport: Any = None
        self.flow = FlowControl(None)
        self.parser = httptools.HttpResponseParser(self)
        self.head: asyncio.Future[int] = loop.create_future()
        """the answer's status once its head is complete; 0: the connection closed or broke first"""
        self.done: asyncio.Future[None] = loop.create_future()
        """the answer is complete (a refusal), or the connection closed"""
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.body_bytes = 0
        self.tail = b""
        """bytes after the 101 head until the tunnel is piped (frames the replica sent at once), the client's first"""
        self.sink: Callable[[bytes], None] | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.flow = FlowControl(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.flow.closed = True
        if not self.head.done():
            self.head.set_result(0)
        if not self.done.done():
            self.done.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.sink is not None:
            self.sink(data)
            return
        if self.status == 101:  # switched, the tunnel not piped yet: no more HTTP, the bytes wait for the pipe
            self.tail += data
            if len(self.tail) > MAX_EARLY_BYTES:
                self.flow.pause_reading()  # the pipe reads on once the client takes them
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0] if exc.args and isinstance(exc.args[0], int) else len(data)
            self.tail += data[offset:]
        except httptools.HttpParserError:
            if not self.head.done():
                self.head.set_result(0)
            self.transport.close()

    def pause_writing(self) -> None:
        self.flow.pause_writing()

    def resume_writing(self) -> None:
        self.flow.resume_writing()

    def on_status(self, status: bytes) -> None:
        self.reason = status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self.headers = []
            return
        self.status = status
        if not self.head.done():
            self.head.set_result(status)

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        if self.body_bytes > MAX_REFUSAL_BYTES:
            self.transport.close()
            return
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.status != 101 and not self.done.done():
            self.done.set_result(None)


class Tunnel:
    """One switched connection: the client's bytes to the replica and back, and when it went quiet."""

    __slots__ = ("upstream", "responder", "loop", "idle_s", "last", "closed", "timer")

    def __init__(self, upstream: TunnelUpstream, responder: Responder, loop: asyncio.AbstractEventLoop,
                 idle_s: float) -> None:
        self.upstream, self.responder, self.loop, self.idle_s = upstream, responder, loop, idle_s
        self.last = loop.time()
        self.closed: asyncio.Future[str] = loop.create_future()
        """resolved with why the tunnel ends: upstream_closed, idle_timeout or shutdown"""
        self.timer = loop.call_later(idle_s, self._check_idle)

    def from_client(self, data: bytes) -> None:
        self.last = self.loop.time()
        transport = self.upstream.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def to_client(self, data: bytes) -> None:
        self.last = self.loop.time()
        self.responder.write(data)

    def end(self, reason: str) -> None:
        if not self.closed.done():
            self.closed.set_result(reason)

    def _check_idle(self) -> None:
        quiet_s = self.loop.time() - self.last
        if quiet_s >= self.idle_s:
            self.end("idle_timeout")
        else:
            self.timer = self.loop.call_later(self.idle_s - quiet_s, self._check_idle)


class WebSockets:
    """Every WebSocket the gateway relays: the limit, the idle timeout, the metrics (module docs)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, metrics: GatewayMetrics, settings: WebSocketSpec) -> None:
        self.loop = loop
        self.metrics = metrics
        self.settings = settings
        self.tunnels: set[Tunnel] = set()
        self.opening = 0
        """upgrades admitted and not yet switched or refused (they count against the limit too)"""

    def admit(self, service: str) -> Denial | None:
        """None when one more WebSocket may open, else the 503 to answer (counted)."""
        if over_limit(len(self.tunnels) + self.opening, self.settings.max_connections):
            self.metrics.websocket(service, "limit")
            return Denial(503, "websocket_limit", "too many open WebSocket connections",
                          headers=((b"retry-after", b"1"),))
        return None

    def close_all(self) -> None:
        """The gateway is stopping: end every tunnel now (a WebSocket has no request to let finish)."""
        for tunnel in list(self.tunnels):
            tunnel.end("shutdown")

    async def relay(self, request: Request, responder: Responder, service: ServiceTable, head: bytes,
                    pinned: str | None, hash_key: str | None, deadline: float, connect_timeout_s: float,
                    attempts: int, request_id: str, answered: Callable[[int, str], None]) -> None:
        """Open the upgrade on a replica (a refused connection is tried on another, up to ``attempts``),
        relay its answer, and pipe the tunnel until it ends; ``answered(status, revision)`` once the client has
        its answer."""
        loop = self.loop
        self.opening += 1  # given back on every way out below: refused, failed, cancelled, or switched
        handed_off = False
        conn: TunnelUpstream | None = None
        try:
            opened = await self._connect(service, pinned, hash_key, deadline, connect_timeout_s, attempts)
            if opened is None:
                self.metrics.websocket(service.name, "error")
                responder.send_simple(503, "no ready upstream for this service", request_id,
                                      headers=((b"retry-after", b"1"),), close=True)
                answered(503, "")
                return
            upstream, conn = opened
            conn.transport.write(head)
            try:
                status = await asyncio.wait_for(conn.head, max(0.0, deadline - loop.time()))
                if status not in (0, 101):
                    await asyncio.wait_for(conn.done, max(0.0, deadline - loop.time()))
            except TimeoutError:
                status = -1
            if status <= 0:  # no answer in time (-1), or the connection closed or broke first (0)
                timed_out = status < 0
                self.metrics.websocket(service.name, "error")
                responder.send_simple(504 if timed_out else 502, "upstream timed out" if timed_out
                                      else "upstream unavailable", request_id, close=True)
                answered(504 if timed_out else 502, upstream.revision)
                return
            if status != 101:
                self.metrics.websocket(service.name, "rejected")
                responder.start(_refusal(conn, request_id), close=True)
                responder.finish()
                answered(status, upstream.revision)
                return
            self.opening -= 1
            handed_off = True  # from here the tunnel counts in self.tunnels, and _pipe closes the replica's side
            await self._pipe(conn, responder, service.name, upstream.revision, answered)
        finally:
            if not handed_off:
                self.opening -= 1
                if conn is not None and conn.transport is not None:
                    conn.transport.close()

    async def _connect(self, service: ServiceTable, pinned: str | None, hash_key: str | None, deadline: float,
                       connect_timeout_s: float, attempts: int) -> tuple[UpstreamState, TunnelUpstream] | None:
        loop = self.loop
        tried: list[UpstreamState] = []
        for _ in range(attempts):
            upstream = service.pick(loop.time(), pinned, hash_key, tried)
            remaining = deadline - loop.time()
            if upstream is None or remaining <= 0:
                return None
            tried.append(upstream)
            try:
                _, conn = await asyncio.wait_for(
                    loop.create_connection(lambda: TunnelUpstream(loop), upstream.host, upstream.port),
                    min(remaining, connect_timeout_s))
            except (OSError, TimeoutError):
                self.metrics.attempt(service.name, upstream.revision, "connect_error")
                continue
            return upstream, conn
        return None

    async def _pipe(self, conn: TunnelUpstream, responder: Responder, service: str, revision: str,
                    answered: Callable[[int, str], None]) -> None:
        loop = self.loop
        tunnel = Tunnel(conn, responder, loop, self.settings.idle_timeout_s)
        self.tunnels.add(tunnel)
        self.metrics.websocket(service, "upgraded")
        self.metrics.websocket_opened(service, 1)
        reason = "client_closed"
        try:
            lines = [b"HTTP/1.1 101 %s\r\n" % (conn.reason or REASONS[101])]
            lines += [b"%s: %s\r\n" % (name, value) for name, value in conn.headers]
            early = responder.switch(b"".join([*lines, b"\r\n", conn.tail]), tunnel)
            conn.tail = b""
            answered(101, revision)
            conn.sink = tunnel.to_client
            responder.flow.feed_from(conn.flow)  # a client that reads slowly pauses reading from the replica
            conn.flow.feed_from(responder.flow)  # and a slow replica pauses reading from the client
            if not responder.flow.writing_paused:
                conn.flow.resume_reading()  # paused while early bytes waited for the pipe (MAX_EARLY_BYTES)
            if early:
                tunnel.from_client(early)
            conn.done.add_done_callback(lambda _: tunnel.end("upstream_closed"))
            reason = await tunnel.closed
        finally:
            tunnel.timer.cancel()
            self.tunnels.discard(tunnel)
            self.metrics.websocket_opened(service, -1)
            self.metrics.websocket_closed(service, reason)
            responder.flow.feed_from(None)
            if conn.transport is not None:
                conn.transport.close()
            if not responder.flow.closed:
                responder.flow.transport.close()


def _refusal(conn: TunnelUpstream, request_id: str) -> bytes:
    """A replica's answer other than 101, as the client gets it (whole, then the connection closes)."""
    body = b"".join(conn.body)
    lines = [b"HTTP/1.1 %d %s\r\n" % (conn.status, conn.reason or REASONS.get(conn.status, b"Unknown"))]
    has_id = False
    for name, value in conn.headers:
        lname = name.lower()
        if lname in HOP_BY_HOP or lname == b"content-length":
            continue
        has_id = has_id or lname == b"x-request-id"
        lines.append(b"%s: %s\r\n" % (name, value))
    if not has_id:
        lines.append(b"x-request-id: %s\r\n" % request_id.encode())
    lines.append(b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body))
    return b"".join([*lines, body])
