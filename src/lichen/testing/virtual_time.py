"""Virtual time for asyncio tests: a "10 s backoff" takes no real time and is checked exactly.

The same idea as kopf's ``looptime``: :class:`VirtualTimeLoop` is an asyncio
event loop whose ``time()`` is virtual. Whenever nothing is ready to run
(no callback, no I/O, no thread at work), it moves its time straight to the
next timer instead of sleeping until then. Every ``asyncio.sleep``,
``asyncio.timeout`` and ``wait_for`` runs on those timers, and so does every
:class:`lichen.clocks.Clock` wait, so a controller with its probe tasks,
periodic tasks and backoff waits runs minutes of its life in milliseconds,
in the same order as it would in real time::

    from lichen.testing import LoopClock, run_in_virtual_time, until

    async def scenario() -> None:
        clock = LoopClock()                       # now(): the loop's (virtual) time
        controller = Controller(..., clock=clock)
        task = asyncio.create_task(controller.run())
        await until(lambda: launcher.alive(), "the first start")
        started = clock.now()
        await asyncio.sleep(30)                   # returns at once; the loop's time moved 30 s
        assert clock.now() - started == 30.0

    run_in_virtual_time(scenario())

Rules of the twin:

* Time stands still while a thread started with ``run_in_executor`` or
  ``asyncio.to_thread`` works: the loop waits for it in real time, so its
  result is the next thing that happens (a thread's work takes no virtual
  time). A thread still busy after ``thread_patience_s`` real seconds lets
  time move on, so a hung thread cannot hang the loop.
* Real sockets and subprocesses are not synchronised with virtual time: a
  timeout around real I/O may expire before the answer arrives. Put the
  in-memory twins of :mod:`lichen.testing` behind those seams instead.
* It starts at 1000.0 by default (code that reads a 0 timestamp as "never"
  stays correct), and :class:`LoopClock` puts the Unix epoch
  ``wall_offset`` seconds earlier, so ``wall()`` is virtual too.
* Code that waits 0 s over and over until the time is due spins forever
  here, since time only moves when the loop is idle; after ``spin_limit``
  such iterations at one instant the loop raises :class:`BusyLoopError`.
"""

from __future__ import annotations

import asyncio
import selectors
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor
from typing import Any, TypeVar

from lichen.clocks import wait_on_loop

T = TypeVar("T")
START_S = 1000.0
WALL_OFFSET_S = 1_700_000_000.0


class BusyLoopError(RuntimeError):
    """The loop ran :attr:`VirtualTimeLoop.spin_limit` iterations without time moving (real time would have)."""


class _VirtualSelector(selectors.DefaultSelector):  # type: ignore[misc, valid-type]
    """Polls the real selector; when nothing is ready, moves the loop's time to its next timer."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self._loop = loop
        self._thread_wait_since: float | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        loop = self._loop
        if timeout == 0:
            loop.note_busy_iteration()
        if ready or timeout == 0:
            self._thread_wait_since = None
            return ready
        if loop.threads_working:
            # the thread's answer comes next: wait for it in real time, with time standing still
            real_now = time.monotonic()
            if self._thread_wait_since is None:
                self._thread_wait_since = real_now
            if timeout is None or real_now - self._thread_wait_since < loop.thread_patience_s:
                return super().select(0.05)
        self._thread_wait_since = None
        if timeout is None:  # no timer at all: only I/O (a signal, a thread's call_soon_threadsafe) can wake us
            return super().select(None)
        loop.advance_to_next_timer(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time (see the module docs)."""

    def __init__(self, start: float = START_S, thread_patience_s: float = 30.0, spin_limit: int = 1_000_000) -> None:
        self._virtual_now = float(start)
        self.thread_patience_s = thread_patience_s
        self.spin_limit = spin_limit
        """loop iterations with work always ready and time standing still before :class:`BusyLoopError`"""
        self._spins = 0
        self._spinning_at = self._virtual_now
        self.threads_working = 0
        """executor jobs under way: while there are any, time stands still"""
        super().__init__(selector=_VirtualSelector(self))

    def time(self) -> float:
        return self._virtual_now

    def note_busy_iteration(self) -> None:
        """One iteration with work ready at once; too many in a row at one instant is a livelock."""
        if self._virtual_now != self._spinning_at:
            self._spins, self._spinning_at = 0, self._virtual_now
        self._spins += 1
        if self._spins > self.spin_limit:
            raise BusyLoopError(f"{self._spins} loop iterations at virtual time {self._virtual_now:g} with work always "
                                "ready: a busy loop (a wait of 0 s, over and over?) keeps time from moving")

    def advance_to_next_timer(self, timeout: float) -> None:
        """Move time to the earliest timer (exactly its ``when()``), or by ``timeout`` when none is known."""
        scheduled = getattr(self, "_scheduled", None)  # asyncio's timer heap: its head is the next live timer
        target = scheduled[0].when() if scheduled else self._virtual_now + timeout
        self._virtual_now = max(self._virtual_now, target)

    def run_in_executor(self, executor: Executor | None, func: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        future = super().run_in_executor(executor, func, *args)
        self.threads_working += 1
        future.add_done_callback(self._thread_done)
        return future

    def _thread_done(self, _future: asyncio.Future[Any]) -> None:
        self.threads_working -= 1

    async def shutdown_default_executor(self, *args: Any) -> None:
        self.threads_working += 1  # joining the executor's threads is thread work too, not a reason to jump
        try:
            await super().shutdown_default_executor(*args)
        finally:
            self.threads_working -= 1

    @property
    def clock(self) -> LoopClock:
        """A :class:`lichen.clocks.Clock` on this loop's time, usable before the loop runs."""
        return LoopClock(self)


class LoopClock:
    """A :class:`lichen.clocks.Clock` whose ``now()`` is an event loop's ``time()``.

    Bound to ``loop``, or to the loop running at each call. Waits go through
    that loop's timers, so on a :class:`VirtualTimeLoop` they take virtual time.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None, wall_offset: float = WALL_OFFSET_S) -> None:
        self._loop = loop
        self.wall_offset = wall_offset

    def now(self) -> float:
        return (self._loop or asyncio.get_running_loop()).time()

    def wall(self) -> float:
        return self.wall_offset + self.now()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait_for(self, event: asyncio.Event, timeout_s: float) -> bool:
        return await wait_on_loop(event, timeout_s)


def run_in_virtual_time(main: Coroutine[Any, Any, T], *, start: float = START_S) -> T:
    """``asyncio.run(main)`` on a fresh :class:`VirtualTimeLoop` (left-over tasks are cancelled, the loop closed)."""
    with asyncio.Runner(loop_factory=lambda: VirtualTimeLoop(start)) as runner:
        return runner.run(main)


async def until(condition: Callable[[], object], what: str, *, within_s: float = 60.0, every_s: float = 0.01) -> Any:
    """Wait for ``condition()`` to be truthy and return it; fail naming ``what`` after ``within_s`` of loop time.

    It first lets what is runnable at this instant run (a few zero-time
    yields), so a condition that follows at once is seen at the same
    instant; then it checks every ``every_s``. On a :class:`VirtualTimeLoop` neither
    costs real time.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    for _ in range(20):
        value = condition()
        if value:
            return value
        await asyncio.sleep(0)
    while True:
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within_s:g} s (loop time) waiting for {what}")
        await asyncio.sleep(every_s)
        value = condition()
        if value:
            return value
