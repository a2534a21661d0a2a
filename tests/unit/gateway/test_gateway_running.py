"""The gateway runner waits through an injected clock: its drain on SIGTERM and its watch of the config, keys and
certificates, on virtual time."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from lichen.gateway.running import DRAIN_S, _watch, drain
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


def test_an_unexpected_error_in_one_check_does_not_end_the_watch(caplog: pytest.LogCaptureFixture) -> None:
    checks: list[float] = []
    refreshes: list[float] = []

    def check() -> None:  # the config (and certificate) check: fails twice, then works
        checks.append(LoopClock().now())
        if len(checks) <= 2:
            raise RuntimeError("a library raised what nobody mapped")

    def refresh() -> bool:
        refreshes.append(LoopClock().now())
        if len(refreshes) == 1:
            raise OSError("the keys file vanished")
        return False

    async def scenario() -> None:
        gateway = SimpleNamespace(config=SimpleNamespace(reload_interval_s=0.5),
                                  auth=SimpleNamespace(keys=SimpleNamespace(refresh=refresh, keys={})),
                                  tables=SimpleNamespace(services={}))
        watch = asyncio.ensure_future(_watch(gateway, SimpleNamespace(check=check), LoopClock()))
        await asyncio.sleep(2.25)
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)

    with caplog.at_level("ERROR", logger="lichen.gateway"):
        run_in_virtual_time(scenario())
    assert len(checks) == 4 and len(refreshes) == 4  # every tick, the failed ones included
    failures = [r.getMessage() for r in caplog.records if "watch_failed" in r.getMessage()]
    assert len(failures) == 3 and "RuntimeError: a library raised" in failures[0] and "OSError" in " ".join(failures)
