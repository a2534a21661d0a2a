"""Passive health: outlier ejection with Envoy's semantics.

A host is ejected after ``consecutive_failures`` 5xx responses or connect
failures in a row. Its ejection lasts ``base_ejection_s × n`` where n counts
its ejections, capped at ``max_ejection_s``; n goes back to zero once the host
has stayed healthy for ``max_ejection_s``. Ejection never takes more than
``max_ejection_percent`` of the hosts, except that one host may always be
ejected (as Envoy does) — callers then route to ejected hosts rather than to
none ("panic routing").
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class OutlierPolicy:
    consecutive_failures: int = 5
    base_ejection_s: float = 30.0
    max_ejection_s: float = 300.0
    max_ejection_percent: int = 50


@dataclass(frozen=True, slots=True)
class OutlierState:
    consecutive_failures: int = 0
    ejections: int = 0
    ejected_until: float | None = None
    healthy_since: float = 0.0


def is_ejected(state: OutlierState, now: float) -> bool:
    return state.ejected_until is not None and now < state.ejected_until


def record_success(state: OutlierState, now: float, policy: OutlierPolicy) -> OutlierState:
    """A good response: the failure streak ends; a long healthy stretch forgets past ejections."""
    if state.ejected_until is not None and now >= state.ejected_until:
        state = replace(state, ejected_until=None, healthy_since=state.ejected_until)
    if state.ejections and state.ejected_until is None and now - state.healthy_since >= policy.max_ejection_s:
        state = replace(state, ejections=0)
    if state.consecutive_failures == 0:
        return state
    return replace(state, consecutive_failures=0)


def may_eject(ejected_now: int, total: int, max_percent: int) -> bool:
    """Whether one more host may be ejected out of ``total`` with ``ejected_now`` already out."""
    if max_percent <= 0 or total <= 0:
        return False
    if ejected_now == 0:
        return True
    return (ejected_now + 1) * 100 <= max_percent * total


def record_failure(
    state: OutlierState, now: float, policy: OutlierPolicy, ejected_now: int, total: int
) -> tuple[OutlierState, bool]:
    """A 5xx or connect failure. Returns the new state and whether the host was ejected just now."""
    if is_ejected(state, now):
        return state, False
    if state.ejected_until is not None:  # its ejection ran out: it is back on probation
        state = replace(state, ejected_until=None, healthy_since=state.ejected_until)
    failures = state.consecutive_failures + 1
    if failures < policy.consecutive_failures or not may_eject(ejected_now, total, policy.max_ejection_percent):
        return replace(state, consecutive_failures=failures), False
    ejections = state.ejections + 1
    if now - state.healthy_since >= policy.max_ejection_s and state.ejections:
        ejections = 1
    duration = min(policy.base_ejection_s * ejections, policy.max_ejection_s)
    return OutlierState(consecutive_failures=0, ejections=ejections, ejected_until=now + duration, healthy_since=now), True
