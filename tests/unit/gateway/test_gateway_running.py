"""The gateway runner waits through an injected clock: its drain on SIGTERM, on virtual time."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from lichen.gateway.running import DRAIN_S, drain
from lichen.testing import LoopClock, run_in_virtual_time


def test_drain_waits_for_in_flight_requests_then_gives_up_at_its_deadline() -> None:
    async def scenario() -> None:
        clock = LoopClock()
        busy = SimpleNamespace(task=object())
        gateway = SimpleNamespace(connections=[busy])
        asyncio.get_running_loop().call_later(2.0, setattr, busy, "task", None)  # its request finishes after 2 s
        started = clock.now()
        assert await drain(gateway, clock, DRAIN_S) is True
        assert clock.now() - started == pytest.approx(2.0, abs=1e-9)  # checked every 0.05 s: at the instant
        busy.task = object()  # a request that never finishes: the drain ends at its deadline
        started = clock.now()
        assert await drain(gateway, clock, DRAIN_S) is False
        assert clock.now() - started == pytest.approx(DRAIN_S, abs=1e-9)

    run_in_virtual_time(scenario())
