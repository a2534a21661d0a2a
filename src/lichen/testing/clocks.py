"""A manual clock for tests: time moves only when the test says so."""

from __future__ import annotations

import asyncio


class FakeClock:
    """Implements :class:`lichen.clocks.Clock`; ``sleep`` and an unset ``wait_for`` advance time instantly.

    For code with one waiter at a time (a ticker, a notification cycle). Code
    with several concurrent waiters (the controller loop with its probe
    tasks) needs :class:`lichen.testing.VirtualTimeLoop`, which orders every
    timer on the event loop.
    """

    def __init__(self, start: float = 1000.0, wall_offset: float = 1_700_000_000.0) -> None:
        self._now = start
        self._wall_offset = wall_offset

    def now(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._now + self._wall_offset

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("a clock cannot go back")
        self._now += seconds
        return self._now

    async def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)

    async def wait_for(self, event: asyncio.Event, timeout_s: float) -> bool:
        await asyncio.sleep(0)
        if not event.is_set():
            self.advance(max(0.0, timeout_s))
        return event.is_set()
