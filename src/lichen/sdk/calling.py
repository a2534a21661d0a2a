"""Calling another service of the app: through its gateway, by name, with the current request's id.

Public as :mod:`lichen.client`. Under ``lichen up`` every replica knows the
gateway (``LICHEN_GATEWAY_URL``) and where each service's own path ``/``
sits on it (``LICHEN_SERVICE_URLS``, see :func:`lichen.gateway.configs.service_paths`)::

    from lichen.client import Client

    class Feedback(Service):
        def setup(self):
            self.sentiment = Client("sentiment", timeout=2.0)   # one pooled client per replica

        @endpoint("/v1/feedback", method="POST")
        def feedback(self, req: Feedback) -> Stored:
            score = self.sentiment.post("/v1/score", json={"text": req.text}).raise_for_status().json()

:class:`Client` and :class:`AsyncClient` are ``httpx.Client`` and
``httpx.AsyncClient`` with a ``base_url`` resolved from the service's name
and one request hook: each request carries the headers of
:func:`forwarded_headers`, read when it is sent (so a client made once in
``setup()`` forwards the id of whichever request is being handled). That is
``X-Request-ID`` and the W3C ``traceparent`` (and ``tracestate``): the
replica's innermost span as the parent when it records spans, else the
request's own trace context passed on as it arrived
(:func:`lichen.sdk.traces.outgoing_headers`). A header the caller sets itself
wins.
"""

from __future__ import annotations

from typing import Any

import httpx

from lichen.errors import ConfigError
from lichen.logs import REQUEST_ID
from lichen.sdk.settings import ReplicaSettings
from lichen.sdk.traces import outgoing_headers

__all__ = ["AsyncClient", "Client", "forwarded_headers", "service_url"]

REQUEST_ID_HEADER = "x-request-id"


def forwarded_headers() -> dict[str, str]:
    """The headers that carry the request being handled into a call it makes: its ``X-Request-ID`` and its
    trace context (``traceparent``, ``tracestate``). The one place request context is propagated."""
    request_id = REQUEST_ID.get()
    headers = outgoing_headers()
    if request_id:
        headers[REQUEST_ID_HEADER] = request_id
    return headers


def service_url(service: str | None = None, settings: ReplicaSettings | None = None) -> str:
    """The base URL of ``service`` on the gateway (its own path ``/`` is there), or the gateway's with none.

    A ``ConfigError`` when the replica was not told (not started by ``lichen up``) or the app has no such
    service.
    """
    settings = ReplicaSettings.from_env() if settings is None else settings
    if settings.gateway_url is None:
        raise ConfigError("not set: this process was not started by `lichen up`; pass base_url=... instead",
                          where=f"env {ReplicaSettings.env_name('gateway_url')}")
    if service is None:
        return settings.gateway_url
    url = settings.service_urls.get(service)
    if url is None:
        known = ", ".join(sorted(settings.service_urls)) or "none"
        raise ConfigError(f"no service {service!r} is reachable through the gateway (services: {known}; a service "
                          f"whose every route has a host or header condition has no base URL: call the gateway "
                          f"with Client() and its full path)", where=f"env {ReplicaSettings.env_name('service_urls')}")
    return url


def _add_forwarded(request: httpx.Request) -> None:
    for name, value in forwarded_headers().items():
        if name not in request.headers:
            request.headers[name] = value


async def _add_forwarded_async(request: httpx.Request) -> None:
    _add_forwarded(request)


def _hooks(given: Any, hook: Any) -> dict[str, list[Any]]:
    hooks = {name: list(fns) for name, fns in (given or {}).items()}
    hooks["request"] = [hook, *hooks.get("request", [])]
    return hooks


class Client(httpx.Client):
    """An ``httpx.Client`` for ``service`` (or the gateway itself with none), forwarding ``X-Request-ID``.

    ``base_url=`` skips the lookup (a test, a process outside ``lichen up``); every other argument is
    ``httpx.Client``'s, so ``transport=httpx.MockTransport(...)`` stands in for the other service in a test.
    """

    def __init__(self, service: str | None = None, *, base_url: str | httpx.URL | None = None,
                 settings: ReplicaSettings | None = None, **kwargs: Any) -> None:
        kwargs["event_hooks"] = _hooks(kwargs.get("event_hooks"), _add_forwarded)
        super().__init__(base_url=base_url if base_url is not None else service_url(service, settings), **kwargs)
        self.service = service


class AsyncClient(httpx.AsyncClient):
    """The ``httpx.AsyncClient`` flavour of :class:`Client`, for ``async def`` endpoints."""

    def __init__(self, service: str | None = None, *, base_url: str | httpx.URL | None = None,
                 settings: ReplicaSettings | None = None, **kwargs: Any) -> None:
        kwargs["event_hooks"] = _hooks(kwargs.get("event_hooks"), _add_forwarded_async)
        super().__init__(base_url=base_url if base_url is not None else service_url(service, settings), **kwargs)
        self.service = service
