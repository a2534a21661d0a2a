"""The checks a request passes before it is proxied: authentication, rate limits, admission.

Each returns ``None`` to let the request through or a
:class:`~lichen.gateway.responses.Denial` saying why not; the caller
(:meth:`lichen.gateway.proxying.Gateway.handle`) has one path that counts,
logs and answers any denial. The decisions themselves are the pure
functions of :mod:`lichen.control` (token buckets, the admission verdict);
this module holds their state between requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from lichen.control.admission import admission_decision, retry_after_header_s
from lichen.control.rate_limiting import TokenBucket, default_burst, take_token
from lichen.gateway.authenticating import ALLOWED_ANONYMOUS, Authenticator, credential_of
from lichen.gateway.metrics import GatewayMetrics
from lichen.gateway.responses import Denial
from lichen.gateway.requests import Request
from lichen.gateway.tables import ServiceRuntime
from lichen.spec.models import AdmissionSpec, RateLimitSpec

_MAX_BUCKETS = 100_000
_CHALLENGE = ((b"www-authenticate", b'Bearer realm="lichen"'),)


def authenticate(auth: Authenticator, request: Request, path: str, now_wall: float) -> tuple[Denial | None, str | None]:
    """``(None, principal)`` for a caller allowed on ``path`` (principal None when auth is off), else a 401/403."""
    if not auth.enabled:
        return None, ALLOWED_ANONYMOUS.principal
    credential = credential_of(
        request.authorization.decode("latin-1") if request.authorization else None,
        request.api_key.decode("latin-1") if request.api_key else None,
    )
    verdict = auth.check(credential, path, now_wall)
    if not verdict.status:
        return None, verdict.principal
    if verdict.status == 403:
        return Denial(403, verdict.reason, "forbidden for this route"), None
    return Denial(verdict.status, verdict.reason, "missing or invalid credentials", _CHALLENGE), None


class RateLimits:
    """Token buckets per API key and per client IP (bounded: past 100,000 keys the table starts afresh)."""

    def __init__(self, spec: RateLimitSpec, metrics: GatewayMetrics) -> None:
        self.metrics = metrics
        self.configure(spec)
        self.key_buckets: dict[str, TokenBucket] = {}
        self.ip_buckets: dict[str, TokenBucket] = {}

    def configure(self, spec: RateLimitSpec) -> None:
        """A reloaded config: new rates, same buckets (a reload does not hand out a fresh burst)."""
        self.per_key = (spec.per_key_rps, default_burst(spec.per_key_rps, spec.burst)) if spec.per_key_rps else None
        self.per_ip = (spec.per_ip_rps, default_burst(spec.per_ip_rps, spec.burst)) if spec.per_ip_rps else None
        self.active = self.per_key is not None or self.per_ip is not None
        """any limit set (else the request path skips the check)"""

    def check(self, principal: str | None, client_ip: str, now: float) -> Denial | None:
        if self.per_key is not None and principal is not None:
            denial = self._take("key", self.per_key, self.key_buckets, principal, now)
            if denial is not None:
                return denial
        if self.per_ip is not None:
            return self._take("ip", self.per_ip, self.ip_buckets, client_ip, now)
        return None

    def _take(self, scope: str, rate: tuple[float, float], buckets: dict[str, TokenBucket], who: str,
              now: float) -> Denial | None:
        decision = take_token(buckets.get(who), now, rate[0], rate[1])
        if len(buckets) >= _MAX_BUCKETS and who not in buckets:
            buckets.clear()
        buckets[who] = decision.bucket
        if decision.allowed:
            return None
        self.metrics.rate_limit(scope)
        retry_after = str(max(1, int(decision.retry_after_s + 0.999))).encode()
        return Denial(429, f"rate_limited_{scope}", "rate limit exceeded", ((b"retry-after", retry_after),))


def take_slot(runtime: ServiceRuntime, max_inflight: int | None, spec: AdmissionSpec) -> bool | None:
    """Take an in-flight slot of the service now (True), refuse one (False: shed), or None: wait in the queue
    (:func:`wait_for_slot`). A slot taken must be given back with :func:`release_slot`."""
    verdict = admission_decision(runtime.inflight, max_inflight, len(runtime.waiters), spec.queue_size)
    if verdict == "admit":
        runtime.inflight += 1
        return True
    return None if verdict == "queue" else False


async def wait_for_slot(runtime: ServiceRuntime, spec: AdmissionSpec, loop: asyncio.AbstractEventLoop) -> bool:
    """Wait in the service's bounded queue for the slot of a request that finishes; False after the timeout."""
    waiter: asyncio.Future[bool] = loop.create_future()
    runtime.waiters.append(waiter)
    timer = loop.call_later(spec.queue_timeout_s, _expire(waiter))
    try:
        return await waiter  # True: handed the slot of a request that finished
    except asyncio.CancelledError:
        if waiter.done() and not waiter.cancelled() and waiter.result():
            release_slot(runtime)  # granted, but the client left: pass the slot on
        raise
    finally:
        timer.cancel()
        if waiter in runtime.waiters:
            runtime.waiters.remove(waiter)


def shed(runtime: ServiceRuntime, max_inflight: int | None, spec: AdmissionSpec) -> Denial:
    retry_after = retry_after_header_s(spec.queue_timeout_s, len(runtime.waiters), max_inflight)
    return Denial(503, "shed", "service is at capacity, retry later", ((b"retry-after", str(retry_after).encode()),))


def release_slot(runtime: ServiceRuntime) -> None:
    """Hand the in-flight slot to the oldest queued request, or give it back."""
    while runtime.waiters:
        waiter = runtime.waiters.popleft()
        if not waiter.done():
            waiter.set_result(True)
            return
    runtime.inflight -= 1


def _expire(waiter: asyncio.Future[bool]) -> Callable[[], Any]:
    return lambda: waiter.done() or waiter.set_result(False)
