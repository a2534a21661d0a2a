"""Rolling updates with Kubernetes Deployment semantics.

``max_surge`` (ints or percentages, rounded up) bounds how many replicas may
exist above the desired count; ``max_unavailable`` (rounded down) bounds
how many of the desired count may be unready. If both round to zero,
one replica may be unavailable, as in Kubernetes. Old replicas that are
not ready are removed first, then ready ones as new replicas become ready.
A rollout that makes no progress (no new replica created or ready) within
``progress_deadline_s`` is marked stalled and stops creating replicas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from lichen.control.plans import RolloutState


def _resolve(value: int | str, desired: int, round_up: bool) -> int:
    if isinstance(value, int):
        return value
    percent = int(value.rstrip("%"))
    exact = desired * percent / 100
    return math.ceil(exact) if round_up else math.floor(exact)


def resolve_limits(max_surge: int | str, max_unavailable: int | str, desired: int) -> tuple[int, int]:
    """(surge, unavailable) as replica counts for ``desired`` replicas."""
    surge = _resolve(max_surge, desired, round_up=True)
    unavailable = _resolve(max_unavailable, desired, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


@dataclass(frozen=True)
class OldReplica:
    id: str
    ready: bool
    created_index: int


@dataclass(frozen=True)
class RollingStep:
    start_new: int
    stop_old: tuple[str, ...]


def rolling_step(
    desired: int,
    new_total: int,
    new_ready: int,
    old: list[OldReplica],
    surge: int,
    unavailable: int,
    may_scale_up: bool = True,
) -> RollingStep:
    """How many new replicas to start and which old ones to stop, this pass."""
    all_count = new_total + len(old)
    start_new = 0
    if may_scale_up:
        start_new = max(0, min(desired + surge - all_count, desired - new_total))
    min_available = max(0, desired - unavailable)
    new_unavailable = new_total - new_ready
    max_scaled_down = all_count - min_available - new_unavailable
    stops: list[str] = []
    if max_scaled_down > 0:
        unhealthy = sorted((o for o in old if not o.ready), key=lambda o: o.created_index)
        for replica in unhealthy[:max_scaled_down]:
            stops.append(replica.id)
        healthy = sorted((o for o in old if o.ready), key=lambda o: o.created_index)
        available = new_ready + len(healthy)
        can_stop = min(max_scaled_down - len(stops), available - min_available)
        for replica in healthy[: max(0, can_stop)]:
            stops.append(replica.id)
    return RollingStep(start_new=start_new, stop_old=tuple(stops))


def advance_rollout(
    state: RolloutState, new_total: int, new_ready: int, old_count: int, desired: int, deadline_s: float, now: float
) -> RolloutState:
    """Record progress, completion or a missed progress deadline."""
    if state.status == "complete":
        return state
    progressed = new_total > state.new_total or new_ready > state.new_ready
    state = replace(state, new_total=new_total, new_ready=new_ready)
    if progressed:
        state = replace(state, last_progress_at=now, status="progressing", reason="")
    if old_count == 0 and new_ready >= desired and new_total == desired:
        return replace(state, status="complete", reason="")
    if state.status == "progressing" and now - state.last_progress_at >= deadline_s:  # due when the wake-up comes
        return replace(
            state,
            status="stalled",
            reason=f"no progress for {deadline_s:g}s: {new_ready}/{desired} replicas of revision "
            f"{state.revision} ready",
        )
    return state


def rollout_event(previous: RolloutState | None, rollout: RolloutState) -> tuple[str, str] | None:
    """The event (kind, reason) a rollout's new state is worth: its start, or a change of status."""
    if previous is None:
        return "RolloutStarted", f"revision {rollout.revision}"
    if previous.status == rollout.status:
        return None
    kind = {"complete": "RolloutComplete", "stalled": "RolloutStalled"}.get(rollout.status, "RolloutProgressing")
    return kind, rollout.reason or f"revision {rollout.revision}"


def give_up_reason(rollout: RolloutState, crash_looping_new: int, auto_rollback: bool) -> str | None:
    """Why a rolling update should go back to the previous revision (None: it goes on).

    It gives up when its new revision has a replica in CrashLoopBackOff (it fails before it ever serves), or
    when it missed ``progress_deadline_s`` (stalled: a replica that never passes readiness, or no room to place
    it). Never for a rollout that completed, and not at all without ``auto_rollback``.
    """
    if not auto_rollback or rollout.status == "complete":
        return None
    if crash_looping_new:
        return (f"{crash_looping_new} replica{'s' if crash_looping_new > 1 else ''} of revision {rollout.revision} "
                "in CrashLoopBackOff")
    if rollout.status == "stalled":
        return rollout.reason
    return None
