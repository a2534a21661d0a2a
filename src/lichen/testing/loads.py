"""An open-loop request load for tests and benchmarks: does a rollout lose requests?

Requests leave on a fixed schedule (``rate_per_s``), whatever the server
does, as wrk2 and vegeta send them: a stalled server cannot slow the load
down and hide its failures, as a closed loop (one request after another)
would. Every request is a new ``POST`` (not retried by the gateway unless the
path is idempotent) on a shared keep-alive pool, and every outcome is counted:
the status, or the kind of transport error.

    with OpenLoopLoad("http://127.0.0.1:8080/v1/echo", rate_per_s=50, body={"text": "hi"}) as load:
        ...  # roll out, restart, scale down
    assert load.failures == []
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass(frozen=True)
class Failure:
    at_s: float
    """seconds after the load started"""
    outcome: str
    """the HTTP status, or the transport error's class name"""
    detail: str = ""


@dataclass
class OpenLoopLoad:
    url: str
    rate_per_s: float = 50.0
    method: str = "POST"
    body: Any = field(default_factory=lambda: {"text": "hi"})
    timeout_s: float = 10.0
    outcomes: Counter[str] = field(default_factory=Counter)
    failures: list[Failure] = field(default_factory=list)
    sent: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="open-loop-load", daemon=True)
        self._started = 0.0
        self._lock = threading.Lock()

    def __enter__(self) -> OpenLoopLoad:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop sending; returns once every request sent has an outcome."""
        self._stop.set()
        self._thread.join(timeout=self.timeout_s + 30)

    @property
    def started_mono(self) -> float:
        """``time.monotonic()`` when the load started: a failure's ``at_s`` is seconds after it."""
        return self._started

    @property
    def answered(self) -> int:
        with self._lock:
            return sum(self.outcomes.values())

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=64)
        async with httpx.AsyncClient(timeout=self.timeout_s, limits=limits) as client:
            tasks: set[asyncio.Task[None]] = set()
            index = 0
            while not self._stop.is_set():
                due = self._started + index / self.rate_per_s
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(min(delay, 0.05))
                    continue
                task = asyncio.create_task(self._one(client, index))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                index += 1
                self.sent = index
            if tasks:
                await asyncio.gather(*tasks)

    async def _one(self, client: httpx.AsyncClient, index: int) -> None:
        at = time.monotonic() - self._started
        try:
            response = await client.request(self.method, self.url, json=self.body)
        except httpx.HTTPError as exc:
            self._count(type(exc).__name__, Failure(at, type(exc).__name__, str(exc)[:200]))
            return
        status = str(response.status_code)
        self._count(status, None if response.status_code < 400 else Failure(at, status, response.text[:200]))

    def _count(self, outcome: str, failure: Failure | None) -> None:
        with self._lock:
            self.outcomes[outcome] += 1
            if failure is not None:
                self.failures.append(failure)
