"""Time as an injected dependency.

Decisions never read the wall clock; they take ``now`` (seconds, monotonic)
as an argument. Shell code that waits does so through a :class:`Clock`, so
tests can substitute :class:`lichen.testing.FakeClock`.
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


class SystemClock:
    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
