"""Token buckets for rate limits per API key and per client IP."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TokenBucket:
    tokens: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    bucket: TokenBucket
    retry_after_s: float


def take_token(bucket: TokenBucket | None, now: float, rate_per_s: float, burst: float) -> RateDecision:
    """Refill at ``rate_per_s`` up to ``burst`` since the last update, then take one token if there is one.

    A new client starts with a full bucket. When refused, ``retry_after_s`` is
    how long until one token is back.
    """
    if bucket is None:
        tokens = burst
    else:
        tokens = min(burst, bucket.tokens + max(0.0, now - bucket.updated_at) * rate_per_s)
    if tokens >= 1.0:
        return RateDecision(True, TokenBucket(tokens - 1.0, now), 0.0)
    return RateDecision(False, TokenBucket(tokens, now), (1.0 - tokens) / rate_per_s)


def default_burst(rate_per_s: float, burst: int | None) -> float:
    """The configured burst, else one second's worth of requests (at least 1)."""
    return float(burst) if burst is not None else max(1.0, rate_per_s)
