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
RESPONSE_START = "lichen.response_start"
"""scope key of the request's :class:`ResponseStart`, set by the replica wrapper around every app"""


class ResponseStart:
    """The status of the response a request sent, 0 until it started; one per request, in its scope.

    The replica wrapper already watches every message it sends, so the gate reads this
    instead of wrapping ``send`` a second time to learn whether a 504 can still go out.
    """

    __slots__ = ("status",)

    def __init__(self) -> None:
        self.status = 0

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


class _Deadline:
    """One request's timeout: cancels its task when due (``asyncio.timeout``'s protocol, for less per request)."""

    __slots__ = ("task", "cancelling", "at", "expired")

    def __init__(self, task: asyncio.Task[Any], at: float) -> None:
        self.task = task
        self.cancelling = task.cancelling()
        self.at = at
        self.expired = False

    def expire(self) -> None:
        self.expired = True
        self.task.cancel()


class EndpointGate:
    """Wraps one route's ASGI app with its concurrency limit and timeout.

    All counting happens on the event loop thread (threads hand releases
    back with ``call_soon_threadsafe``), so no lock is needed; the in-flight
    gauge reads :attr:`in_use` when scraped instead of being set per request.
    """

    def __init__(self, app: Any, *, path: str, max_concurrency: int, timeout_s: float, stream: bool, inflight: Gauge,
                 threads: bool = True):
        """``threads=False``: the handler never hands work to a thread (an ``async def``, not a stream), so its
        slot needs no :class:`Ticket` and is freed when the request ends."""
        self.app = app
        self.threads = threads
        self.path = path
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.stream = stream
        self.in_use = 0
        inflight.set_function(lambda: self.in_use)  # read at scrape time: nothing to count per request
        # The requests' deadlines, due first first: every request gets the same timeout_s, so insertion
        # order is deadline order, and one timer (for the first) serves them all instead of one per request.
        self._deadlines: dict[_Deadline, None] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        self._busy = _response(
            503,
            {"detail": f"{path} is at its max_concurrency ({max_concurrency}); retry later"},
            [(b"retry-after", b"1")],
        )
        seconds = f"{timeout_s:g}"
        self._timed_out = _response(504, {"detail": f"{path} did not answer within its timeout_s ({seconds} s)"}, [])

    def _free(self) -> None:
        self.in_use -= 1

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        """Schedule the timer for the first deadline (unless it is set on this loop already)."""
        if self._timer is not None and self._timer_loop is loop:
            return
        for first in self._deadlines:
            self._timer, self._timer_loop = loop.call_at(first.at, self._expire_due, loop), loop
            return
        self._timer = self._timer_loop = None

    def _expire_due(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now = loop.time()
        deadlines = self._deadlines
        while deadlines:
            deadline = next(iter(deadlines))
            if deadline.at > now:
                break
            del deadlines[deadline]
            deadline.expire()
        self._arm(loop)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self.in_use >= self.max_concurrency:
            await _send(send, self._busy)
            return
        self.in_use += 1
        ticket = Ticket(self) if self.threads else None
        started = False
        # No extra task: a timer cancels this one at the deadline, as asyncio.timeout does (the same
        # cancelling()/uncancel() bookkeeping, so an outside cancel is never taken for a timeout). A
        # stream's deadline is lifted once its first event is ready (the response starts).
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        assert task is not None
        deadline = _Deadline(task, loop.time() + self.timeout_s)
        deadlines = self._deadlines
        deadlines[deadline] = None
        if self._timer is None or self._timer_loop is not loop:
            self._arm(loop)

        response: ResponseStart | None = None if self.stream else scope.get(RESPONSE_START)
        if response is None:  # a stream, or a gate outside a replica wrapper: watch the messages here

            async def tracked_send(message: dict[str, Any]) -> None:
                nonlocal started
                if message["type"] == "http.response.start":
                    started = True
                    if self.stream:
                        deadlines.pop(deadline, None)
                await send(message)

        token = CURRENT_TICKET.set(ticket) if ticket is not None else None
        timed_out = False
        try:
            await self.app(scope, receive, tracked_send if response is None else send)
        except asyncio.CancelledError:
            # Ours only when the timer fired and no one else cancelled the task meanwhile.
            if not (deadline.expired and task.uncancel() <= deadline.cancelling):
                raise
            timed_out = not (started if response is None else response.status)
        except BaseException:  # the handler's own TimeoutError too: a 500 like any other exception
            if deadline.expired:
                task.uncancel()
            raise
        else:
            if deadline.expired:  # the handler swallowed the cancellation
                task.uncancel()
        finally:
            deadlines.pop(deadline, None)
            # Before the 504 goes out: the client sees the slot count it caused.
            if ticket is None:
                self._free()
            else:
                CURRENT_TICKET.reset(token)  # type: ignore[arg-type]
                ticket.release()
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
