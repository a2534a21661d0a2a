"""Per-endpoint concurrency limits and timeouts, as ASGI wrappers around each route.

The gate runs before the body is read: past ``max_concurrency`` the client
gets 503 with ``Retry-After`` at once (there is no queue); past
``timeout_s`` it gets 504. A slot is held by a :class:`Ticket` with a
reference count, so work that outlives its request keeps the slot: Python
cannot stop a thread, so a sync handler that timed out keeps running and
keeps counting (in ``lichen_inflight_requests`` too) until it returns.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
from typing import Any

from prometheus_client import Gauge

CURRENT_TICKET: contextvars.ContextVar[Ticket | None] = contextvars.ContextVar("lichen_ticket", default=None)
_JSON_HEADERS = [(b"content-type", b"application/json")]


class Ticket:
    """One request's hold on an endpoint slot; the slot frees when every holder released it."""

    __slots__ = ("_gate", "_holders")

    def __init__(self, gate: EndpointGate) -> None:
        self._gate = gate
        self._holders = 1

    def hold(self) -> None:
        self._holders += 1

    def release(self) -> None:
        self._holders -= 1
        if self._holders == 0:
            self._gate._free()


class EndpointGate:
    """Wraps one route's ASGI app with its concurrency limit and timeout.

    All counting happens on the event loop thread (threads hand releases
    back with ``call_soon_threadsafe``), so no lock is needed.
    """

    def __init__(self, app: Any, *, path: str, max_concurrency: int, timeout_s: float, stream: bool, inflight: Gauge):
        self.app = app
        self.path = path
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.stream = stream
        self.in_use = 0
        self._inflight = inflight
        self._busy = _response(
            503,
            {"detail": f"{path} is at its max_concurrency ({max_concurrency}); retry later"},
            [(b"retry-after", b"1")],
        )
        seconds = f"{timeout_s:g}"
        self._timed_out = _response(504, {"detail": f"{path} did not answer within its timeout_s ({seconds} s)"}, [])

    def _free(self) -> None:
        self.in_use -= 1
        self._inflight.dec()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self.in_use >= self.max_concurrency:
            await _send(send, self._busy)
            return
        self.in_use += 1
        self._inflight.inc()
        ticket = Ticket(self)
        started = False
        # No extra task: asyncio.timeout cancels this one at the deadline. A stream's
        # deadline is lifted once its first event is ready (the response starts).
        deadline = asyncio.timeout(self.timeout_s)

        async def tracked_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if self.stream:
                    deadline.reschedule(None)
            await send(message)

        token = CURRENT_TICKET.set(ticket)
        timed_out = False
        try:
            async with deadline:
                await self.app(scope, receive, tracked_send)
        except TimeoutError:
            if not deadline.expired():
                raise  # the handler's own TimeoutError: a 500 like any other exception
            timed_out = not started
        finally:
            CURRENT_TICKET.reset(token)
            ticket.release()  # before the 504 goes out: the client sees the slot count it caused
        if timed_out:
            await _send(send, self._timed_out)


def _response(status: int, body: dict[str, Any], extra: list[tuple[bytes, bytes]]) -> tuple[dict[str, Any], bytes]:
    payload = json.dumps(body).encode()
    headers = [*_JSON_HEADERS, (b"content-length", str(len(payload)).encode()), *extra]
    return {"type": "http.response.start", "status": status, "headers": headers}, payload


async def _send(send: Any, response: tuple[dict[str, Any], bytes]) -> None:
    start, body = response
    # A fresh dict each time: the outer wrapper appends X-Request-ID to the headers.
    await send({"type": start["type"], "status": start["status"], "headers": list(start["headers"])})
    await send({"type": "http.response.body", "body": body})
