"""Faults injected into one service's traffic at the gateway (``lichen chaos``): which apply to a request.

A fault is ``kind`` (``latency``: hold the request ``delay_ms`` before it
goes on; ``errors``: answer ``status`` instead of the service; ``reset``:
drop the client's connection without an answer), the ``percent`` of
requests it hits, and ``until_wall``, after which it no longer applies, so a
fault outlives no chaos run that forgot it. Each fault draws on its own, as
Envoy's fault filter does: a request may be delayed and then fail.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol


class TrafficFault(Protocol):
    kind: str
    percent: float
    delay_ms: float
    status: int
    until_wall: float


@dataclass(frozen=True, slots=True)
class FaultEffect:
    """What to do to one request: wait ``delay_s``, then answer ``status`` (0: pass on) or ``reset``."""

    delay_s: float = 0.0
    status: int = 0
    reset: bool = False


NO_EFFECT = FaultEffect()


def effect_for(faults: Sequence[TrafficFault], now_wall: float, draw: Callable[[], float]) -> FaultEffect:
    """The combined effect of the faults that are live at ``now_wall`` and hit this request (``draw()`` in
    [0, 1) per fault)."""
    delay_s, status, reset = 0.0, 0, False
    for fault in faults:
        if now_wall >= fault.until_wall or draw() * 100.0 >= fault.percent:
            continue
        if fault.kind == "latency":
            delay_s += fault.delay_ms / 1000.0
        elif fault.kind == "errors" and not reset:
            status = status or fault.status
        elif fault.kind == "reset" and not status:
            reset = True
    if not (delay_s or status or reset):
        return NO_EFFECT
    return FaultEffect(delay_s, status, reset)
