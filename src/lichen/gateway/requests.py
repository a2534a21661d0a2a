"""A request as the gateway parsed it: its head, and its body as it arrives.

The protocol (:mod:`lichen.gateway.serving`) fills a :class:`Request` from
httptools' callbacks and feeds the body into :class:`RequestBody` chunk by
chunk; the handler reads the head and attaches one :class:`BodySink` (the
replica's connection) that the rest of the body is written to as it
arrives. While the body is small it is also kept, so a retry on another
replica can send it again.
"""

from __future__ import annotations

from typing import Any, Protocol


class BodySink(Protocol):
    """Where a request body goes as it arrives (an upstream connection's writer)."""

    def write(self, chunk: bytes) -> None: ...

    def end(self) -> None:
        """The body is complete."""

    def abort(self) -> None:
        """The body broke a limit or its framing: stop waiting for the replica's answer."""


class RequestBody:
    """A request body as it arrives: forwarded to one attached sink, and kept for a replay while it is small."""

    __slots__ = ("chunks", "size", "replayable", "done", "error", "_sink")

    REPLAY_LIMIT = 64 * 1024

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        """what arrived and can be sent again (to another replica on a retry)"""
        self.size = 0
        self.replayable = True
        """False once more than REPLAY_LIMIT bytes arrived: a retry can no longer send the whole body"""
        self.done = False
        self.error = 0
        """the status (400, 413) of a body that broke the framing or the size limit"""
        self._sink: BodySink | None = None

    @property
    def attached(self) -> bool:
        return self._sink is not None

    def attach(self, sink: BodySink) -> None:
        """Send every later chunk to ``sink``, then ``end()`` (or ``abort()`` when the body breaks a limit)."""
        self._sink = sink
        if not self.replayable:
            self.chunks = []  # what arrived so far is written once, by the caller, and cannot be replayed anyway

    def detach(self) -> None:
        self._sink = None

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        sink = self._sink
        if sink is None:  # nobody reads it yet: everything is kept, to be written when a sink attaches
            self.chunks.append(chunk)
            if self.size > self.REPLAY_LIMIT:
                self.replayable = False
            return
        sink.write(chunk)
        if self.replayable:
            self.chunks.append(chunk)
            if self.size > self.REPLAY_LIMIT:
                self.replayable = False
                self.chunks = []

    def finish(self) -> None:
        self.done = True
        if self._sink is not None:
            self._sink.end()

    def fail(self, status: int) -> None:
        self.error = status
        if self._sink is not None:
            self._sink.abort()


class Request:
    """One parsed request head; its body arrives later into ``body``."""

    __slots__ = (
        "url", "method", "headers", "http11", "keep_alive", "host", "request_id", "authorization", "api_key",
        "pinned", "expect", "content_length", "transfer_encoding", "chunked", "body", "reject", "upgrade_header",
        "upgrade", "traceparent", "trace",
    )

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
        self.body = RequestBody()
        self.reject: tuple[int, str] | None = None
        self.upgrade_header: bytes | None = None
        self.upgrade = False
        """a WebSocket upgrade the parser stopped at: the handler tunnels it or answers and closes"""
        self.traceparent: bytes | None = None
        self.trace: Any = None
        """the gateway's span of this request (:class:`lichen.gateway.spans.ActiveSpan`) when tracing is on"""

    @property
    def has_body(self) -> bool:
        return self.chunked or (self.content_length is not None and self.content_length.strip() not in (b"", b"0"))
