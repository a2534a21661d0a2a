"""Applying a ``lichen chaos`` traffic fault to one request (which faults hit it: :mod:`lichen.control.traffic_faults`).

A delay, an error or a reset happens before the request goes on. A
bandwidth limit lets it go on and paces its answer: while the request is
proxied, the client connection's transport is wrapped by
:class:`PacedTransport`, which writes the answer out no faster than the
service's link allows (one token bucket per service, shared by every answer
of that service, :func:`lichen.control.traffic_faults.link_wait`). The
request is not done until the last paced byte is written, so the connection
is closed or reused only after the whole answer went out. Bytes waiting for
the link are bounded: past :data:`HIGH_WATER_BYTES` the client connection's
flow control says "stop", which stops reading from the replica, as a full
socket buffer would.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Coroutine
from typing import Any

from lichen.control.rate_limiting import TokenBucket
from lichen.control.traffic_faults import FaultEffect, link_wait
from lichen.gateway.flow_control import FlowControl
from lichen.gateway.requests import Request
from lichen.gateway.responses import Responder

RESET_STATUS = 502
"""how an injected reset is counted in the metrics: a failed request, as an upstream reset would be"""
PIECE_BYTES = 4096
"""the most one paced write sends at once"""
HIGH_WATER_BYTES = 64 * 1024
LOW_WATER_BYTES = 16 * 1024


class Link:
    """One service's shared link under a bandwidth fault: its rate and token bucket."""

    __slots__ = ("rate_bps", "bucket")

    def __init__(self, rate_bps: float) -> None:
        self.rate_bps = rate_bps
        self.bucket: TokenBucket | None = None

    def take(self, size_bytes: int, now_s: float) -> float:
        wait_s, self.bucket = link_wait(self.bucket, now_s, self.rate_bps, size_bytes)
        return wait_s


_links: dict[str, Link] = {}
"""per service; a new rate starts a new bucket"""


def link_for(service: str, rate_bps: float) -> Link:
    link = _links.get(service)
    if link is None or link.rate_bps != rate_bps:
        link = _links[service] = Link(rate_bps)
    return link


class PacedTransport:
    """A client transport whose writes leave no faster than a :class:`Link`; everything else is the transport's."""

    def __init__(self, inner: Any, flow: FlowControl, link: Link, loop: asyncio.AbstractEventLoop) -> None:
        self.inner = inner
        self.flow = flow
        self.link = link
        self.loop = loop
        self.queue: deque[bytes] = deque()
        self.queued_bytes = 0
        self.head_taken = False
        """the first queued piece has taken its bytes from the bucket and waits for its time"""
        self.timer: asyncio.TimerHandle | None = None
        self.paused_flow = False
        self.drained: asyncio.Future[None] | None = None

    def __getattr__(self, name: str) -> Any:  # pause_reading, abort, get_extra_info...: the real transport's
        return getattr(self.inner, name)

    def write(self, data: bytes) -> None:
        if not data:
            return
        view = memoryview(data)
        for start in range(0, len(view), PIECE_BYTES):
            self.queue.append(bytes(view[start:start + PIECE_BYTES]))
        self.queued_bytes += len(data)
        if self.queued_bytes > HIGH_WATER_BYTES and not self.paused_flow:
            self.paused_flow = True
            self.flow.pause_writing()  # the replica's side stops reading until the link catches up
        if self.timer is None:
            self._pump()

    def _pump(self) -> None:
        self.timer = None
        while self.queue:
            if self.inner.is_closing():  # the client went away: nothing more can reach it
                self.queue.clear()
                self.queued_bytes = 0
                break
            if not self.head_taken:
                self.head_taken = True
                wait_s = self.link.take(len(self.queue[0]), self.loop.time())
                if wait_s > 0:
                    self.timer = self.loop.call_later(wait_s, self._pump)
                    return
            piece = self.queue.popleft()
            self.head_taken = False
            self.queued_bytes -= len(piece)
            self.inner.write(piece)
            if self.paused_flow and self.queued_bytes <= LOW_WATER_BYTES:
                self.paused_flow = False
                self.flow.resume_writing()
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    async def flush(self) -> None:
        """Until every byte written so far has gone to the real transport."""
        if self.queue:
            self.drained = self.loop.create_future()
            await self.drained

    def discard(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.queue.clear()
        self.queued_bytes = 0
        if self.paused_flow:
            self.paused_flow = False
            self.flow.resume_writing()


async def inject(effect: FaultEffect, request: Request, responder: Responder, request_id: str,
                 proxied: Coroutine[Any, Any, tuple[int, str]], service: str) -> tuple[int, str]:
    """Apply the effect to a request whose proxying is ``proxied`` (not started yet): wait its delay, then answer its
    error or drop the connection, or proxy it, its answer paced when a bandwidth fault hit it; the status and
    revision, as ``proxied`` returns them."""
    if effect.delay_s:
        await asyncio.sleep(effect.delay_s)
    if effect.status or effect.reset:
        proxied.close()  # never started: the service does not see the request
        if effect.status:
            responder.send_simple(effect.status, "fault injected by lichen chaos", request_id,
                                  close=request.has_body and not request.body.done)
            return effect.status, ""
        responder.flow.transport.abort()  # the client sees its connection reset, with no answer
        return RESET_STATUS, ""
    if not effect.rate_bps:
        return await proxied
    flow = responder.flow
    if isinstance(flow.transport, PacedTransport):  # a pipelined request behind a paced one: the same pacing
        return await proxied
    paced = PacedTransport(flow.transport, flow, link_for(service, effect.rate_bps), asyncio.get_running_loop())
    flow.transport = paced
    try:
        result = await proxied
        await paced.flush()  # the whole answer out before the connection is closed or reused
        return result
    except BaseException:
        paced.discard()
        raise
    finally:
        flow.transport = paced.inner
