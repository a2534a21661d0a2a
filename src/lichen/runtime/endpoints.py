"""The endpoint registry: which replicas of which service and revision serve traffic now.

The controller adds a replica when it passes readiness and removes it when
it fails readiness or starts draining. Consumers (the gateway, the metrics
scraper) either call :meth:`EndpointRegistry.subscribe` for a callback on
every change, or await :meth:`EndpointRegistry.wait_for_change` with the
last version they saw (the control API turns that into a long poll).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import httpx

from lichen.control.draining import GatewayView
from lichen.control.probing import ProbeState


@dataclass(frozen=True, order=True)
class Endpoint:
    service: str
    revision: str
    replica: str
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "url": self.url}


Subscriber = Callable[[int, list[Endpoint]], None]


class EndpointRegistry:
    def __init__(self) -> None:
        self._endpoints: dict[str, Endpoint] = {}
        self.version = 0
        self._subscribers: list[Subscriber] = []
        self._changed: asyncio.Event | None = None

    def add(self, endpoint: Endpoint) -> None:
        if self._endpoints.get(endpoint.replica) == endpoint:
            return
        self._endpoints[endpoint.replica] = endpoint
        self._notify()

    def remove(self, replica: str) -> None:
        if self._endpoints.pop(replica, None) is not None:
            self._notify()

    def endpoints(self, service: str | None = None, revision: str | None = None) -> list[Endpoint]:
        return sorted(
            e for e in self._endpoints.values()
            if (service is None or e.service == service) and (revision is None or e.revision == revision)
        )

    def by_service(self) -> dict[str, list[Endpoint]]:
        result: dict[str, list[Endpoint]] = {}
        for endpoint in self.endpoints():
            result.setdefault(endpoint.service, []).append(endpoint)
        return result

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(version, endpoints)`` after every change; returns an unsubscribe function."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(callback)

        return unsubscribe

    async def wait_for_change(self, seen_version: int, timeout_s: float) -> int:
        """Return once ``version`` differs from ``seen_version`` or the timeout passes."""
        if self.version != seen_version:
            return self.version
        if self._changed is None:
            self._changed = asyncio.Event()
        event = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout_s)
        return self.version

    def _notify(self) -> None:
        self.version += 1
        snapshot = self.endpoints()
        for callback in list(self._subscribers):
            callback(self.version, snapshot)
        if self._changed is not None:
            self._changed.set()
            self._changed = None


class Ingress(Protocol):
    """What the controller and its helpers need of the app's gateway, which routes to these endpoints
    (:class:`lichen.runtime.gatewaying.SupervisedGateway` under ``lichen up``)."""

    @property
    def url(self) -> str | None:
        """Where clients reach the app."""

    @property
    def readiness(self) -> ProbeState:
        """Its health check, as a readiness probe state."""

    def view(self) -> GatewayView:
        """Which registry version it has confirmed serving (a drain decision's input)."""

    def status(self) -> dict[str, Any]:
        """What ``lichen status`` shows of it."""


async def gateway_exposition(client: httpx.AsyncClient, gateway: Ingress | None) -> str | None:
    """The gateway's ``/metrics`` text, or None when there is no gateway or it does not answer."""
    if gateway is None or gateway.url is None:
        return None
    try:
        response = await client.get(gateway.url + "/metrics")
        response.raise_for_status()
    except httpx.HTTPError:
        return None
    return response.text

