"""Admission control: admit, queue briefly, or shed a request for a service at its in-flight limit."""

from __future__ import annotations

import math
from typing import Literal

Admission = Literal["admit", "queue", "shed"]


def admission_decision(inflight: int, max_inflight: int | None, queued: int, queue_size: int) -> Admission:
    """Admit under the limit; past it wait in a bounded queue; with the queue full, shed (503)."""
    if max_inflight is None or inflight < max_inflight:
        return "admit"
    if queued < queue_size:
        return "queue"
    return "shed"


def retry_after_header_s(queue_timeout_s: float, queued: int, max_inflight: int | None) -> int:
    """The whole seconds a shed client is told to wait (HTTP Retry-After): at least 1."""
    per_slot = queue_timeout_s / max(1, max_inflight or 1)
    return max(1, math.ceil(queue_timeout_s + queued * per_slot))
