"""Time as an injected dependency.

Decisions never read the wall clock; they take ``now`` (seconds, monotonic)
as an argument. Shell code that reads the time or waits does so through a
:class:`Clock`: :meth:`Clock.sleep` for a pause, :meth:`Clock.wait_for` for
"this event, or give up after a while". :class:`SystemClock` is the real one:
its ``now()`` is the monotonic clock asyncio's event loop also runs on, and it
waits through that loop. Tests substitute a twin from :mod:`lichen.testing`:
:class:`~lichen.testing.FakeClock` (time moves when the test says so) or the
clock of a :class:`~lichen.testing.VirtualTimeLoop` (time jumps to the next
timer whenever the loop has nothing to do, as kopf's looptime does).
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds."""

    def wall(self) -> float:
        """Unix epoch seconds (for records and logs only)."""

    async def sleep(self, seconds: float) -> None: ...

    async def wait_for(self, event: asyncio.Event, timeout_s: float) -> bool:
        """Wait until ``event`` is set, at most ``timeout_s``; True when it is set."""


async def wait_on_loop(event: asyncio.Event, timeout_s: float) -> bool:
    """:meth:`Clock.wait_for` through the running event loop's timers (no task per wait)."""
    if not event.is_set():
        try:
            async with asyncio.timeout(max(0.0, timeout_s)):
                await event.wait()
        except TimeoutError:
            pass
    return event.is_set()


class SystemClock:
    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait_for(self, event: asyncio.Event, timeout_s: float) -> bool:
        return await wait_on_loop(event, timeout_s)
