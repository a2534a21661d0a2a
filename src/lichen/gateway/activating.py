"""The activator: hold requests for a service scaled to zero while the controller starts a replica.

A request that finds no ready replica of a service whose config has
``activation`` (``autoscale.min: 0``) is held in a bounded queue per service
(``activation.queue``) for at most ``activation.timeout_s``, and never past its
route timeout. The first request held asks the controller for a replica at once
(``POST /v1/services/<name>/activate`` on the control API the config's
``controller`` link names), so the wake-up does not wait for the autoscaler's
next tick; while requests stay held the ask repeats every ``REASK_S`` (a
controller that restarted, or an ask lost on the way). The config reload that
brings the first ready replica releases every held request to the new table.
A full queue or a timeout is a 503 with ``Retry-After``.

Metrics (docs/metrics.md): ``lichen_gateway_held_requests{service}``,
``lichen_cold_start_seconds{service}`` (from the first request held to its
release: the cold start a client saw) and
``lichen_gateway_activations_total{service,outcome}`` (``released``,
``timeout``, ``full``, ``stopped``: the gateway stopped while it held the request).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol


from lichen.gateway.configs import ActivationConfig, ControllerLink
from lichen.gateway.requests import Request
from lichen.gateway.responses import Responder
from lichen.gateway.metrics import GatewayMetrics
from lichen.logs import get_logger

log = get_logger("lichen.gateway")

REASK_S = 1.0
"""how often the controller is asked again while requests stay held"""
ASK_TIMEOUT_S = 2.0
HoldOutcome = Literal["released", "timeout", "full", "stopped"]


class ReplicaAsker(Protocol):
    """The seam to the controller: ask it to start a replica of ``service`` (raises on failure)."""

    async def ask(self, service: str) -> None: ...


@dataclass
class _Held:
    """One service's held requests: the futures to release, and when the current cold start began."""

    waiters: list[asyncio.Future[bool]] = field(default_factory=list)
    since: float | None = None
    asking: asyncio.Task[None] | None = None


class Activator:
    def __init__(self, loop: asyncio.AbstractEventLoop, metrics: GatewayMetrics, asker: ReplicaAsker) -> None:
        self.loop, self.metrics, self.asker = loop, metrics, asker
        self.held: dict[str, _Held] = {}
        self.stopping = False

    async def hold(self, service: str, activation: ActivationConfig, deadline: float) -> HoldOutcome:
        """Wait until a config brings ``service`` a ready replica (``released``), the timeout or the request's
        deadline passes (``timeout``), or at once when the queue is full (``full``)."""
        loop = self.loop
        held = self.held.setdefault(service, _Held())
        if self.stopping:
            return "stopped"
        if len(held.waiters) >= activation.queue:
            self.metrics.activation(service, "full")
            return "full"
        waiter: asyncio.Future[bool] = loop.create_future()
        held.waiters.append(waiter)
        if held.since is None:
            held.since = loop.time()
            log.info("activating", service=service)
        self.metrics.set_held(service, len(held.waiters))
        if held.asking is None or held.asking.done():
            held.asking = loop.create_task(self._ask_while_held(service, held))
        timer = loop.call_later(max(0.0, min(activation.timeout_s, deadline - loop.time())),
                                lambda: waiter.done() or waiter.set_result(False))
        try:
            released = await waiter
        finally:
            timer.cancel()
            if waiter in held.waiters:
                held.waiters.remove(waiter)
            self.metrics.set_held(service, len(held.waiters))
            if not held.waiters:
                held.since = None  # nobody waits any more: the next request held starts a new cold start
        outcome: HoldOutcome = "released" if released else "stopped" if self.stopping else "timeout"
        self.metrics.activation(service, outcome)
        return outcome

    def release(self, ready: Callable[[str], bool]) -> None:
        """After a config reload: release every held request of each service that now has a ready replica."""
        now = self.loop.time()
        for service, held in self.held.items():
            if not held.waiters or not ready(service):
                continue
            if held.since is not None:
                self.metrics.observe_cold_start(service, now - held.since)
                log.info("activated", service=service, held=len(held.waiters), cold_start_s=round(now - held.since, 3))
            held.since = None
            for waiter in held.waiters:
                if not waiter.done():
                    waiter.set_result(True)
            held.waiters.clear()
            self.metrics.set_held(service, 0)

    async def _ask_while_held(self, service: str, held: _Held) -> None:
        while held.waiters:
            try:
                await self.asker.ask(service)
            except Exception as exc:  # the ask is repeated; the held requests keep their own timeout
                log.warning("activation_ask_failed", service=service, error=f"{type(exc).__name__}: {exc}"[:300])
            await asyncio.sleep(REASK_S)

    def stop(self) -> None:
        """The gateway is stopping: answer every held request now (503), hold no more."""
        self.stopping = True
        for held in self.held.values():
            for waiter in held.waiters:
                if not waiter.done():
                    waiter.set_result(False)

    async def aclose(self) -> None:
        self.stop()
        for held in self.held.values():
            if held.asking is not None:
                held.asking.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await held.asking


class ControllerAsker:
    """Asks the controller of ``lichen up`` over its control API; the link comes from the current config."""

    def __init__(self, link: Callable[[], ControllerLink | None]) -> None:
        self.link = link
        self._client: Any = None  # an httpx.AsyncClient, made (and httpx imported) at the first ask

    async def ask(self, service: str) -> None:
        link = self.link()
        if link is None:
            raise LookupError("no controller in the gateway config to ask for a replica")
        url = json.loads(Path(link.info_file).read_text())["url"]
        token = Path(link.token_file).read_text().strip()
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(timeout=ASK_TIMEOUT_S)
        response = await self._client.post(f"{url}/v1/services/{service}/activate",
                                           headers={"authorization": f"Bearer {token}"})
        response.raise_for_status()



def refuse_held(responder: Responder, request: Request, held: str, request_id: str) -> None:
    """The 503 for a request the activator let go without a replica (``held``: full, stopped or timeout)."""
    message = ("too many requests are waiting for this service to start" if held == "full"
               else "the gateway is stopping" if held == "stopped"
               else "the service did not start a replica in time")
    responder.send_simple(503, message, request_id, headers=((b"retry-after", b"1"),),
                          close=request.has_body and not request.body.done)
