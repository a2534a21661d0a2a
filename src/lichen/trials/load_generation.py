"""The open-loop load generator behind ``lichen loadtest``: requests leave on schedule, whatever the server does.

Each request has an intended send time from :func:`lichen.control.load_profiles.arrival_offsets`.
At that time it goes out on an idle keep-alive connection, or on a new one
(up to ``max_connections``), or waits in line for one; its latency runs from
the *intended* time to the last byte of the answer, so a slow server's
queueing shows in the figures instead of slowing the generator down. The
gap between intended and actual send is kept apart as the generator's own
lag, which says when the generator, not the server, was the limit.

Connections are asyncio protocols that parse answers with httptools; the
request bytes are built once per route. Latencies go into an HDR histogram
(microseconds, 3 significant digits). Failures are counted by kind:
``connect`` (refused or unreachable), ``timeout`` (no full answer within
``timeout_s``: the connection is dropped), ``reset`` (closed mid-answer) and
``protocol`` (an answer that does not parse); answers by status.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httptools
from hdrh.histogram import HdrHistogram

MAX_LATENCY_US = 3_600_000_000
SWEEP_S = 0.05
_now = time.perf_counter
"""every timestamp: uvloop's ``loop.time()`` moves in whole milliseconds, too coarse for latencies"""


@dataclass(frozen=True)
class Target:
    """Where the load goes: ``scheme://host:port`` and the request bytes for each route."""

    scheme: str
    host: str
    port: int
    requests: tuple[bytes, ...]
    routes: tuple[str, ...]
    ssl_context: ssl.SSLContext | None = None


def build_target(url: str, routes: Sequence[str] = (), method: str = "GET", body: bytes = b"",
                 headers: Sequence[tuple[str, str]] = (), verify_tls: bool = True,
                 ca_file: str | None = None) -> Target:
    """A :class:`Target` for ``url``; ``routes`` are paths on it (default: the URL's own path)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL, got {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    paths = tuple(routes) or ((parts.path or "/") + (f"?{parts.query}" if parts.query else ""),)
    for path in paths:
        if not path.startswith("/") or any(c in path for c in " \r\n"):
            raise ValueError(f"route {path!r}: expected a path starting with '/' and without spaces")
    host_header = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers)
    length = f"Content-Length: {len(body)}\r\n" if body or method not in ("GET", "HEAD", "DELETE") else ""
    requests = tuple(
        (f"{method} {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: lichen-loadtest\r\n{extra}{length}\r\n")
        .encode("latin-1") + body for path in paths)
    context = None
    if parts.scheme == "https":
        context = ssl.create_default_context(cafile=ca_file)
        if not verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    return Target(parts.scheme, parts.hostname, port, requests, paths, context)


@dataclass
class LoadResult:
    """What a run measured. ``latency``: intended send to last byte, every answered request; ``lag``: intended
    to actual send (the generator's own delay)."""

    latency: HdrHistogram = field(default_factory=lambda: HdrHistogram(1, MAX_LATENCY_US, 3))
    lag: HdrHistogram = field(default_factory=lambda: HdrHistogram(1, MAX_LATENCY_US, 3))
    statuses: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)
    scheduled: int = 0
    sent: int = 0
    answered: int = 0
    connections_opened: int = 0
    started_wall: float = 0.0
    elapsed_s: float = 0.0
    cpu_s: float = 0.0
    log: list[tuple[float, float, int, str]] | None = None
    """per request, when asked: (intended offset s, latency ms, status or 0, failure kind or "")"""


class _Connection(asyncio.Protocol):
    __slots__ = ("engine", "transport", "parser", "job", "status", "sent_at", "keep_alive", "closed")

    def __init__(self, engine: LoadEngine) -> None:
        self.engine = engine
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.job: tuple[float, int] | None = None  # (intended loop time, route index)
        self.status = 0
        self.sent_at = 0.0
        self.keep_alive = True
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, job: tuple[float, int], now: float) -> None:
        self.job = job
        self.sent_at = now
        self.status = 0
        self.transport.write(self.engine.target.requests[job[1]])  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.fail("protocol")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()

    def on_message_complete(self) -> None:
        job, self.job = self.job, None
        if job is not None:
            self.engine.answered(self, job, self.status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.job is not None:
            job, self.job = self.job, None
            self.engine.failed(self, job, "reset")
        else:
            self.engine.forget(self)

    def fail(self, kind: str) -> None:
        job, self.job = self.job, None
        if job is not None:
            self.engine.failed(self, job, kind)
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class LoadEngine:
    """One run: the schedule, the connections and the counters (see the module docstring)."""

    def __init__(self, target: Target, offsets: Iterator[float], *, max_connections: int = 512,
                 timeout_s: float = 10.0, keep_log: bool = False) -> None:
        self.target = target
        self.offsets = offsets
        self.max_connections = max_connections
        self.timeout_s = timeout_s
        self.result = LoadResult(log=[] if keep_log else None)
        self.idle: list[_Connection] = []
        self.busy: set[_Connection] = set()
        self.connecting = 0
        self.waiting: deque[tuple[float, int]] = deque()
        self.start = 0.0
        self.done_sending = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._all_done: asyncio.Event | None = None
        self._route = 0

    # ------------------------------------------------------------------ run
    async def run(self, on_tick: Callable[[LoadEngine], None] | None = None, tick_s: float = 0.5) -> LoadResult:
        loop = self._loop = asyncio.get_running_loop()
        self._all_done = asyncio.Event()
        cpu_before = os.times()
        self.result.started_wall = time.time()
        self.start = _now() + 0.02
        sweeper = asyncio.create_task(self._sweep())
        ticker = asyncio.create_task(self._tick(on_tick, tick_s)) if on_tick is not None else None
        try:
            await self._schedule(loop)
            self.done_sending = True
            if self._outstanding():
                await self._all_done.wait()
        finally:
            sweeper.cancel()
            if ticker is not None:
                ticker.cancel()
            for connection in [*self.idle, *self.busy]:
                if connection.transport is not None:
                    connection.transport.close()
            cpu_after = os.times()
            self.result.elapsed_s = _now() - self.start
            self.result.cpu_s = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
        return self.result

    async def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        routes = len(self.target.requests)
        for count, offset in enumerate(self.offsets, start=1):
            due = self.start + offset
            now = _now()
            if due > now:
                await asyncio.sleep(due - now)
            elif count % 64 == 0:  # behind schedule: still let answers in, or the loop would starve them
                await asyncio.sleep(0)
            self.result.scheduled += 1
            job = (due, self._route)
            self._route = (self._route + 1) % routes
            self._dispatch(job)

    def _dispatch(self, job: tuple[float, int]) -> None:
        if self.idle:
            connection = self.idle.pop()
            self._send(connection, job)
        elif len(self.busy) + len(self.idle) + self.connecting < self.max_connections:
            self.connecting += 1
            asyncio.ensure_future(self._open(job))
        else:
            self.waiting.append(job)

    def _send(self, connection: _Connection, job: tuple[float, int]) -> None:
        now = _now()
        self.busy.add(connection)
        self.result.sent += 1
        self.result.lag.record_value(max(1, int((now - job[0]) * 1e6)))
        connection.send(job, now)

    async def _open(self, job: tuple[float, int]) -> None:
        loop = self._loop
        try:
            _, connection = await asyncio.wait_for(loop.create_connection(  # type: ignore[union-attr]
                lambda: _Connection(self), self.target.host, self.target.port, ssl=self.target.ssl_context),
                self.timeout_s)
        except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
            self.connecting -= 1
            self._record_failure(job, "timeout" if isinstance(exc, asyncio.TimeoutError) else "connect")
            self._next_waiting_or_finish()
            return
        self.connecting -= 1
        self.result.connections_opened += 1
        self._send(connection, job)  # type: ignore[arg-type]

    # ------------------------------------------------------------ outcomes
    def answered(self, connection: _Connection, job: tuple[float, int], status: int) -> None:
        now = _now()
        latency_s = now - job[0]
        result = self.result
        result.answered += 1
        result.statuses[status] += 1
        result.latency.record_value(max(1, min(MAX_LATENCY_US, int(latency_s * 1e6))))
        if result.log is not None:
            result.log.append((job[0] - self.start, latency_s * 1000, status, ""))
        self.busy.discard(connection)
        if connection.keep_alive and not connection.closed:
            if self.waiting:
                self._send(connection, self.waiting.popleft())
                return
            self.idle.append(connection)
        else:
            connection.closed = True
            connection.transport.close()  # type: ignore[union-attr]
            self._next_waiting_or_finish()
            return
        self._maybe_finished()

    def failed(self, connection: _Connection, job: tuple[float, int], kind: str) -> None:
        self.busy.discard(connection)
        self._record_failure(job, kind)
        self._next_waiting_or_finish()

    def forget(self, connection: _Connection) -> None:
        """An idle connection closed by the server: it is simply no longer pooled."""
        with contextlib.suppress(ValueError):
            self.idle.remove(connection)
        self.busy.discard(connection)
        self._next_waiting_or_finish()

    def _record_failure(self, job: tuple[float, int], kind: str) -> None:
        self.result.failures[kind] += 1
        if self.result.log is not None:
            now = _now()
            self.result.log.append((job[0] - self.start, (now - job[0]) * 1000, 0, kind))

    def _next_waiting_or_finish(self) -> None:
        if self.waiting and len(self.busy) + len(self.idle) + self.connecting < self.max_connections:
            self.connecting += 1
            asyncio.ensure_future(self._open(self.waiting.popleft()))
        self._maybe_finished()

    def _outstanding(self) -> int:
        return len(self.busy) + self.connecting + len(self.waiting)

    def _maybe_finished(self) -> None:
        if self.done_sending and not self._outstanding() and self._all_done is not None:
            self._all_done.set()

    async def _sweep(self) -> None:
        """Drop requests that got no full answer within ``timeout_s`` (and the waiting ones that are too late)."""
        while True:
            await asyncio.sleep(SWEEP_S)
            deadline = _now() - self.timeout_s
            for connection in [c for c in self.busy if c.job is not None and c.job[0] < deadline]:
                connection.fail("timeout")
            while self.waiting and self.waiting[0][0] < deadline:
                self._record_failure(self.waiting.popleft(), "timeout")
            self._maybe_finished()

    async def _tick(self, on_tick: Callable[[LoadEngine], None], tick_s: float) -> None:
        while True:
            await asyncio.sleep(tick_s)
            on_tick(self)

    def progress(self) -> dict[str, Any]:
        """Counters so far, for a live view."""
        now = _now() if self._loop is not None else self.start
        latency = self.result.latency
        return {"elapsed_s": max(0.0, now - self.start), "scheduled": self.result.scheduled,
                "answered": self.result.answered, "failed": sum(self.result.failures.values()),
                "in_flight": len(self.busy), "waiting": len(self.waiting),
                "p99_ms": latency.get_value_at_percentile(99) / 1000 if latency.get_total_count() else None}
