"""maxSurge/maxUnavailable arithmetic, rolling steps, progress deadline and placement."""

from __future__ import annotations

from dataclasses import replace

import pytest

from lichen.control.placing import Refusal, grant_gpus, place
from lichen.control.plans import Machine, Placement, RolloutState
from lichen.control.rolling import OldReplica, advance_rollout, resolve_limits, rolling_step
from lichen.spec.models import ResourcesSpec


@pytest.mark.parametrize(
    ("surge", "unavailable", "desired", "expected"),
    [
        ("25%", "25%", 4, (1, 1)),
        ("25%", "25%", 3, (1, 0)),  # surge rounds up, unavailable rounds down
        ("25%", "25%", 1, (1, 0)),
        ("0%", "10%", 3, (0, 1)),  # both zero: one may be unavailable
        (2, 0, 5, (2, 0)),
        ("50%", 1, 5, (3, 1)),
    ],
)
def test_resolve_limits_rounds_like_kubernetes(surge, unavailable, desired, expected) -> None:
    assert resolve_limits(surge, unavailable, desired) == expected


def _old(n: int, ready: bool = True) -> list[OldReplica]:
    return [OldReplica(f"old-{i}", ready, i) for i in range(n)]


def test_rolling_update_surges_first_and_drains_only_when_new_are_ready() -> None:
    # 4 desired, surge 1, unavailable 0: start one new, stop nothing yet
    step = rolling_step(4, 0, 0, _old(4), surge=1, unavailable=0)
    assert step.start_new == 1 and step.stop_old == ()
    # the new one is not ready yet: nothing else happens
    step = rolling_step(4, 1, 0, _old(4), surge=1, unavailable=0)
    assert step.start_new == 0 and step.stop_old == ()
    # once ready, the oldest old replica is drained
    step = rolling_step(4, 1, 1, _old(4), surge=1, unavailable=0)
    assert step.start_new == 0 and step.stop_old == ("old-0",)


def test_rolling_update_with_unavailable_budget_drains_at_once() -> None:
    step = rolling_step(4, 0, 0, _old(4), surge=1, unavailable=1)
    assert step.start_new == 1 and step.stop_old == ("old-0",)


def test_unready_old_replicas_go_first_and_the_last_ones_leave_when_all_new_are_ready() -> None:
    old = [OldReplica("a", True, 0), OldReplica("b", False, 1)]
    step = rolling_step(2, 0, 0, old, surge=1, unavailable=0)
    assert step.start_new == 1 and step.stop_old == ()  # no budget below 2 available yet
    step = rolling_step(2, 1, 1, old, surge=1, unavailable=0)
    assert step.stop_old == ("b",)  # the unready old one goes before the ready one
    step = rolling_step(2, 2, 2, [OldReplica("a", True, 0)], surge=1, unavailable=0)
    assert step.stop_old == ("a",)


def test_a_stalled_rollout_creates_nothing() -> None:
    assert rolling_step(4, 0, 0, _old(4), 1, 0, may_scale_up=False).start_new == 0


def test_progress_deadline_marks_a_rollout_stalled_with_a_reason_and_completion() -> None:
    state = RolloutState(revision="r2", started_at=0.0, last_progress_at=0.0)
    state = advance_rollout(state, 1, 0, 4, 4, deadline_s=30, now=1.0)
    assert state.status == "progressing" and state.last_progress_at == 1.0
    state = advance_rollout(state, 1, 0, 4, 4, deadline_s=30, now=20.0)
    assert state.status == "progressing"
    assert advance_rollout(state, 1, 0, 4, 4, deadline_s=30, now=30.999).status == "progressing"
    state = advance_rollout(state, 1, 0, 4, 4, deadline_s=30, now=31.0)  # the wake-up reconcile asked for
    assert state.status == "stalled" and "0/4 replicas of revision r2 ready" in state.reason
    done = advance_rollout(state, 4, 4, 0, 4, deadline_s=30, now=40.0)
    assert done.status == "complete"


def test_placement_refuses_overcommit_and_assigns_distinct_gpus() -> None:
    machine = Machine(cpu_cores=4, memory_bytes=8 * 2**30, gpu_indices=(0, 1, 2))
    first = place(ResourcesSpec(cpu=1.5, memory="2Gi", gpu=2), machine, [])
    assert isinstance(first, Placement) and first.gpu_indices == (0, 1) and len(first.cpu_set) == 2
    second = place(ResourcesSpec(gpu=1), machine, [first])
    assert isinstance(second, Placement) and second.gpu_indices == (2,)
    third = place(ResourcesSpec(gpu=1), machine, [first, second])
    assert isinstance(third, Refusal) and "0 of 3 GPUs free" in third
    assert isinstance(place(ResourcesSpec(cpu=3), machine, [first]), Refusal)
    assert isinstance(place(ResourcesSpec(memory="7Gi"), machine, [first]), Refusal)
    other = place(ResourcesSpec(cpu=1), machine, [first])
    assert isinstance(other, Placement) and set(other.cpu_set).isdisjoint(first.cpu_set)
    assert place(ResourcesSpec(), machine, [first, second]) == Placement()


def test_a_request_larger_than_the_machine_is_refused_as_never_fitting() -> None:
    machine = Machine(cpu_cores=2, memory_bytes=4 * 2**30, gpu_indices=())
    for request, words in ((ResourcesSpec(cpu=8), "cpu 8 is more than this machine has (2 cores)"),
                           (ResourcesSpec(memory="64Gi"), "memory 65536Mi is more than this machine has (4096Mi)"),
                           (ResourcesSpec(gpu=1), "gpu 1 is more than this machine has (0 GPUs)")):
        refusal = place(request, machine, [])
        assert isinstance(refusal, Refusal) and refusal.never_fits and str(refusal) == words
    busy = place(ResourcesSpec(cpu=2), machine, [])
    assert isinstance(busy, Placement)
    waiting = place(ResourcesSpec(cpu=1), machine, [busy])
    assert isinstance(waiting, Refusal) and not waiting.never_fits  # room may appear later


def test_a_rollout_is_worth_an_event_when_it_starts_and_when_its_status_changes() -> None:
    from lichen.control.rolling import rollout_event

    started = RolloutState(revision="r2", started_at=0.0, last_progress_at=0.0)
    assert rollout_event(None, started) == ("RolloutStarted", "revision r2")
    assert rollout_event(started, replace(started, new_ready=1)) is None
    stalled = replace(started, status="stalled", reason="no progress for 30s")
    assert rollout_event(started, stalled) == ("RolloutStalled", "no progress for 30s")
    assert rollout_event(stalled, replace(started, status="complete")) == ("RolloutComplete", "revision r2")


def test_a_job_is_granted_the_first_free_gpus_or_told_why_not():
    assert grant_gpus(0, (0, 1)) == () and grant_gpus(0, ()) == ()
    assert grant_gpus(2, (3, 5, 6)) == (3, 5)
    assert grant_gpus(1, (0, 1), in_use=(0,)) == (1,)
    never = grant_gpus(3, (0, 1))
    assert isinstance(never, Refusal) and never.never_fits and str(never) == "gpu 3 is more than this machine has (2 GPUs)"
    busy = grant_gpus(2, (0, 1), in_use=(1,))
    assert isinstance(busy, Refusal) and not busy.never_fits and "1 of 2 GPUs free" in busy
