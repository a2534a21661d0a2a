"""When a failed upstream attempt may be retried, how long to back off, and the retry budget.

The budget (as Linkerd's and Envoy's) lets retries add at most ``ratio`` of
the recent request rate, plus a small floor so a quiet service can still
retry. Counts decay exponentially with time constant ``window_s``.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
RETRYABLE_STATUSES = frozenset({502, 503})
"""A 504 from a replica is its own endpoint timeout: the work may still be running there, and a retry would
make the client wait the timeout twice and run the handler twice, so it is answered, not retried."""


@dataclass(frozen=True, slots=True)
class RetryBudget:
    requests: float = 0.0
    retries: float = 0.0
    updated_at: float = 0.0


def _decayed(budget: RetryBudget, now: float, window_s: float) -> tuple[float, float]:
    factor = math.exp(-max(0.0, now - budget.updated_at) / window_s)
    return budget.requests * factor, budget.retries * factor


def note_request(budget: RetryBudget, now: float, window_s: float = 10.0) -> RetryBudget:
    requests, retries = _decayed(budget, now, window_s)
    return RetryBudget(requests + 1.0, retries, now)


def note_retry(budget: RetryBudget, now: float, window_s: float = 10.0) -> RetryBudget:
    requests, retries = _decayed(budget, now, window_s)
    return RetryBudget(requests, retries + 1.0, now)


def can_retry(
    budget: RetryBudget, now: float, ratio: float, min_retries_per_s: float = 1.0, window_s: float = 10.0
) -> bool:
    """Whether one more retry stays within ``ratio × requests`` (+ the floor) over the recent window."""
    requests, retries = _decayed(budget, now, window_s)
    return retries + 1.0 <= ratio * requests + min_retries_per_s * window_s


def backoff_s(attempt: int, base_ms: float, max_ms: float, roll: float) -> float:
    """Exponential backoff with full jitter: ``roll × min(max, base × 2^(attempt-1))``, in seconds.

    ``attempt`` counts retries from 1; ``roll`` is a random number in [0, 1).
    """
    ceiling_ms = min(max_ms, base_ms * (2.0 ** max(0, attempt - 1)))
    return roll * ceiling_ms / 1000.0


def is_idempotent(method: str, path: str, idempotent_paths: Collection[str]) -> bool:
    """Safe to send twice: an idempotent method, or a POST/PATCH to a path the service marked idempotent."""
    if method in IDEMPOTENT_METHODS:
        return True
    return path in idempotent_paths


def should_retry(
    *,
    attempt: int,
    max_attempts: int,
    idempotent: bool,
    connect_failed: bool,
    status: int | None,
    response_started: bool,
    body_replayable: bool,
) -> bool:
    """Whether a failed attempt is retried (the budget is checked separately).

    A connect failure was never seen by the upstream's handler, so it is always
    retried. A reset before any response byte, or a 502/503, is retried only
    for idempotent requests; a 504 (the replica's own timeout) never is. Nothing is retried once response bytes reached the
    client, or when the request body can no longer be replayed.
    """
    if attempt >= max_attempts or response_started or not body_replayable:
        return False
    if connect_failed:
        return True
    if not idempotent:
        return False
    return status is None or status in RETRYABLE_STATUSES
