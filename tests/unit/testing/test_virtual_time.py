"""The virtual-time event loop of lichen.testing: timers in order, exact times, no real waiting."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from lichen.clocks import SystemClock
from lichen.testing import FakeClock, LoopClock, VirtualTimeLoop, run_in_virtual_time, until


def test_an_hour_of_sleeps_takes_no_real_time_and_lands_exactly() -> None:
    async def scenario() -> list[float]:
        loop = asyncio.get_running_loop()
        marks = [loop.time()]
        for seconds in (10.0, 0.25, 3600.0):
            await asyncio.sleep(seconds)
            marks.append(loop.time())
        return marks

    started = time.monotonic()
    assert run_in_virtual_time(scenario()) == [1000.0, 1010.0, 1010.25, 4610.25]
    assert time.monotonic() - started < 2.0


def test_concurrent_timers_fire_in_time_order() -> None:
    async def scenario() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        fired: list[tuple[str, float]] = []

        async def after(name: str, seconds: float) -> None:
            await asyncio.sleep(seconds)
            fired.append((name, loop.time() - 1000.0))

        await asyncio.gather(after("c", 30), after("a", 1.5), after("b", 10))
        return fired

    assert run_in_virtual_time(scenario()) == [("a", 1.5), ("b", 10.0), ("c", 30.0)]


def test_timeouts_and_clock_waits_run_on_virtual_time() -> None:
    async def scenario() -> None:
        clock = LoopClock()
        event = asyncio.Event()
        assert await clock.wait_for(event, 5.0) is False
        assert clock.now() == 1005.0 and clock.wall() == 1_700_000_000.0 + 1005.0
        asyncio.get_running_loop().call_later(2.0, event.set)
        assert await clock.wait_for(event, 60.0) is True
        assert clock.now() == 1007.0  # woken by the event, not the timeout
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(90):
                await asyncio.Event().wait()
        assert clock.now() == 1097.0

    run_in_virtual_time(scenario())


def test_time_stands_still_while_a_thread_works() -> None:
    """A thread's work takes no virtual time: its result comes before a timer due 10 s later."""
    async def scenario() -> tuple[str, float]:
        loop = asyncio.get_running_loop()
        release = threading.Event()
        loop.call_soon(lambda: threading.Timer(0.05, release.set).start())  # real time
        result = await asyncio.wait_for(asyncio.to_thread(lambda: release.wait(5) and "done"), 10)
        return result, loop.time()

    assert run_in_virtual_time(scenario()) == ("done", 1000.0)


def test_a_clock_bound_to_the_loop_works_before_it_runs_and_until_names_what_it_waited_for() -> None:
    loop = VirtualTimeLoop(start=50.0)
    clock = loop.clock
    assert clock.now() == 50.0

    async def scenario() -> None:
        flag: list[int] = []
        asyncio.get_running_loop().call_later(3.0, flag.append, 1)
        assert await until(lambda: flag, "the flag") == [1]
        assert clock.now() == pytest.approx(53.0, abs=0.01)  # checked every 0.01 s
        with pytest.raises(AssertionError, match="timed out after 2 s .* waiting for nothing"):
            await until(lambda: False, "nothing", within_s=2)

    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()


def test_fake_and_system_clocks_wait_for_an_event() -> None:
    async def scenario() -> None:
        fake = FakeClock(start=0.0)
        event = asyncio.Event()
        assert await fake.wait_for(event, 2.5) is False and fake.now() == 2.5
        event.set()
        assert await fake.wait_for(event, 2.5) is True and fake.now() == 2.5
        assert await SystemClock().wait_for(event, 0.0) is True
        assert await SystemClock().wait_for(asyncio.Event(), 0.0) is False

    asyncio.run(scenario())


def test_a_busy_wait_that_never_lets_time_move_is_named() -> None:
    from lichen.testing.virtual_time import BusyLoopError

    async def spin_until(deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while loop.time() < deadline:
            await asyncio.sleep(0)  # a wait of 0 s: on virtual time, time never gets there

    loop = VirtualTimeLoop(spin_limit=1000)
    try:
        with pytest.raises(BusyLoopError, match="1001 loop iterations at virtual time 1000"):
            loop.run_until_complete(spin_until(1001.0))
    finally:
        loop.close()
