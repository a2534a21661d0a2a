"""A slow or full disk under the controller's state store, simulated for ``lichen chaos`` (``slow_disk``,
``full_disk``): which faults are live, and what they do to one write.

A fault is ``kind`` (``slow``: each write waits ``delay_ms`` first, as on a
saturated disk; ``full``: each write fails with ENOSPC after its statements
ran, so its transaction is rolled back as SQLite does on a full disk) and
``until_wall``, after which it no longer applies: nothing fills the real
disk, and a fault outlives no chaos run that forgot it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DiskFault:
    kind: str
    """``slow`` or ``full``"""
    until_wall: float
    delay_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class DiskEffect:
    delay_s: float = 0.0
    full: bool = False


NO_DISK_EFFECT = DiskEffect()


def disk_effect(faults: Sequence[DiskFault], now_wall: float) -> DiskEffect:
    """What the faults live at ``now_wall`` do to a write: the delays add up; any full disk fails it."""
    live = [f for f in faults if now_wall < f.until_wall]
    if not live:
        return NO_DISK_EFFECT
    return DiskEffect(sum(f.delay_ms for f in live if f.kind == "slow") / 1000.0, any(f.kind == "full" for f in live))


def live_faults(faults: Sequence[DiskFault], now_wall: float) -> list[DiskFault]:
    return [f for f in faults if now_wall < f.until_wall]
