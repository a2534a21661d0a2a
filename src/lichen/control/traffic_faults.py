"""Faults injected into one service's traffic at the gateway (``lichen chaos``): which apply to a request.

A fault is ``kind`` (``latency``: hold the request ``delay_ms`` before it
goes on; ``errors``: answer ``status`` instead of the service; ``reset``:
drop the client's connection without an answer; ``bandwidth``: send the
answer to the client no faster than ``rate_kbps``, through one token bucket
per service, so concurrent answers share the limit as they would share a
slow link), the ``percent`` of
requests it hits, and ``until_wall``, after which it no longer applies, so a
fault outlives no chaos run that forgot it. Each fault draws on its own, as
Envoy's fault filter does: a request may be delayed and then fail.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from lichen.control.rate_limiting import TokenBucket


class TrafficFault(Protocol):
    kind: str
    percent: float
    delay_ms: float
    status: int
    rate_kbps: float
    until_wall: float


@dataclass(frozen=True, slots=True)
class FaultEffect:
    """What to do to one request: wait ``delay_s``, then answer ``status`` (0: pass on) or ``reset``, or pass it on
    with its answer paced to ``rate_bps`` bytes per second (0: not paced)."""

    delay_s: float = 0.0
    status: int = 0
    reset: bool = False
    rate_bps: float = 0.0


NO_EFFECT = FaultEffect()


def effect_for(faults: Sequence[TrafficFault], now_wall: float, draw: Callable[[], float]) -> FaultEffect:
    """The combined effect of the faults that are live at ``now_wall`` and hit this request (``draw()`` in
    [0, 1) per fault)."""
    delay_s, status, reset, rate_bps = 0.0, 0, False, 0.0
    for fault in faults:
        if now_wall >= fault.until_wall or draw() * 100.0 >= fault.percent:
            continue
        if fault.kind == "latency":
            delay_s += fault.delay_ms / 1000.0
        elif fault.kind == "errors" and not reset:
            status = status or fault.status
        elif fault.kind == "reset" and not status:
            reset = True
        elif fault.kind == "bandwidth":  # two limits on one link: the narrower holds
            rate_bps = min(rate_bps or math.inf, fault.rate_kbps * 1000.0 / 8.0)
    if not (delay_s or status or reset or rate_bps):
        return NO_EFFECT
    return FaultEffect(delay_s, status, reset, 0.0 if status or reset else rate_bps)


def link_burst_bytes(rate_bps: float) -> float:
    """How many bytes a paced link lets through at once: 50 ms of its rate, at least one 1500-byte packet."""
    return max(1500.0, rate_bps / 20.0)


def link_wait(bucket: TokenBucket | None, now_s: float, rate_bps: float, size_bytes: int) -> tuple[float, TokenBucket]:
    """Send ``size_bytes`` through a link of ``rate_bps``: seconds to wait before they go, and the bucket after.

    The bucket refills at the rate up to :func:`link_burst_bytes` and may go into debt: each send takes its bytes at
    once and waits until the debt is paid, so sends through one bucket (every answer of a service) queue behind
    each other and together never pass the rate."""
    burst = link_burst_bytes(rate_bps)
    tokens = burst if bucket is None else min(burst, bucket.tokens + max(0.0, now_s - bucket.updated_at) * rate_bps)
    tokens -= size_bytes
    return max(0.0, -tokens / rate_bps), TokenBucket(tokens, now_s)
