"""CrashLoopBackOff: when a crashed replica may start again.

The first restart is immediate; after that the delay starts at
``restart.initial_backoff_s`` and doubles up to ``restart.max_backoff_s``.
A replica that ran for ``restart.reset_after_s`` before crashing starts a
fresh loop (Kubernetes: 10 s doubling to 300 s, reset after 10 min).
"""

from __future__ import annotations

from lichen.spec.models import RestartSpec


def next_crash_count(previous: int, ran_for_s: float, spec: RestartSpec) -> int:
    """Consecutive crashes after one more exit, given how long the process ran."""
    if ran_for_s >= spec.reset_after_s:
        return 1
    return previous + 1


def restart_delay_s(crash_count: int, spec: RestartSpec) -> float:
    """Delay before restarting after the ``crash_count``-th consecutive crash."""
    if crash_count <= 1:
        return 0.0
    exponent = min(crash_count - 2, 64)
    return min(spec.initial_backoff_s * (2.0**exponent), spec.max_backoff_s)


def restart_at(exited_at: float, crash_count: int, spec: RestartSpec) -> float:
    return exited_at + restart_delay_s(crash_count, spec)


def in_crash_loop(crash_count: int) -> bool:
    """True once restarts are delayed (Kubernetes shows CrashLoopBackOff)."""
    return crash_count >= 2
