"""reconcile(desired, observed, now) on a fake clock: scaling, restarts, liveness, rollouts, readiness."""

from __future__ import annotations

from dataclasses import replace

import pytest

from lichen.control.plans import DesiredService, DesiredState, Machine, Placement, ReplicaView
from lichen.control.reconciling import reconcile
from lichen.control.revisions import revision_id
from lichen.spec.models import ServiceSpec
from lichen.testing import FakeClock

MACHINE = Machine(cpu_cores=4, memory_bytes=8 * 2**30, gpu_indices=(0,))


def desired(replicas: int = 2, revision: str = "aaaaaaa", **spec: object) -> DesiredState:
    service_spec = ServiceSpec(entrypoint="app:Svc", replicas=replicas, **spec)
    return DesiredState({"web": DesiredService("web", revision, replicas, service_spec)}, MACHINE)


def running(replica_id: str, revision: str = "aaaaaaa", ready: bool = True, index: int = 0, **kw) -> ReplicaView:
    return ReplicaView(
        id=replica_id, service="web", revision=revision, phase="running", ready=ready, published=ready,
        created_index=index, **kw,
    )


def test_empty_world_starts_the_desired_replicas_with_distinct_ids() -> None:
    plan = reconcile(desired(3), [], FakeClock().now())
    assert [s.replica_id for s in plan.starts] == ["web-aaaaa-0", "web-aaaaa-1", "web-aaaaa-2"]
    assert not plan.stops and not any(s.restart for s in plan.starts)


def test_level_based_a_converged_world_needs_nothing() -> None:
    observed = [running("web-aaaaa-0"), running("web-aaaaa-1", index=1)]
    assert reconcile(desired(2), observed, 0.0).empty


def test_scale_down_prefers_unready_then_newest() -> None:
    observed = [running("a", index=0), running("b", ready=False, index=1), running("c", index=2)]
    plan = reconcile(desired(1), observed, 0.0)
    assert sorted(s.replica_id for s in plan.stops) == ["b", "c"]
    assert all(s.reason == "ScaledDown" for s in plan.stops)


def test_crash_restarts_at_once_then_backs_off() -> None:
    clock = FakeClock()
    crashed = ReplicaView(
        id="web-aaaaa-0", service="web", revision="aaaaaaa", phase="exited", crash_count=1,
        exited_at=clock.now(), last_exit_code=3, last_exit_reason="Error",
    )
    plan = reconcile(desired(1), [crashed], clock.now())
    assert [(s.replica_id, s.restart) for s in plan.starts] == [("web-aaaaa-0", True)]
    looping = replace(crashed, crash_count=3)
    plan = reconcile(desired(1), [looping], clock.now())
    assert not plan.starts and plan.wake_at == clock.now() + 20.0
    assert [c.kind for c in plan.conditions] == ["CrashLoopBackOff"]
    assert "exit code 3" in plan.conditions[0].message
    clock.advance(20.0)
    assert [s.replica_id for s in reconcile(desired(1), [looping], clock.now()).starts] == ["web-aaaaa-0"]


def test_liveness_failure_kills_for_restart_and_withdraws_from_endpoints() -> None:
    observed = [running("web-aaaaa-0", live=False)]
    plan = reconcile(desired(1), observed, 0.0)
    assert [(s.replica_id, s.reason, s.then_restart) for s in plan.stops] == [("web-aaaaa-0", "LivenessFailed", True)]
    assert [(r.replica_id, r.ready) for r in plan.readiness] == [("web-aaaaa-0", False)]
    assert not plan.starts  # it restarts in place once it has exited


def test_readiness_flap_is_published_and_withdrawn() -> None:
    unready = replace(running("web-aaaaa-0"), ready=False, published=True)
    plan = reconcile(desired(1), [unready], 0.0)
    assert [(r.ready, r.reason) for r in plan.readiness] == [(False, "not ready")]
    back = replace(unready, ready=True, published=False)
    assert [(r.ready, r.reason) for r in reconcile(desired(1), [back], 0.0).readiness] == [(True, "ready")]


def test_rolling_update_walks_from_old_to_new_revision() -> None:
    clock = FakeClock()
    want = desired(2, revision="bbbbbbb", rollout={"max_surge": 1, "max_unavailable": 0})
    world = {r.id: r for r in [running("web-aaaaa-0", index=0), running("web-aaaaa-1", index=1)]}
    rollout = None
    for _ in range(10):
        state = DesiredState(
            {"web": replace(want.services["web"], rollout=rollout)}, MACHINE
        )
        plan = reconcile(state, list(world.values()), clock.now())
        rollout = plan.rollouts.get("web", rollout)
        serving = sum(1 for r in world.values() if r.ready)
        assert serving >= 2  # never below desired - maxUnavailable
        assert len(world) <= 3  # never above desired + maxSurge
        for stop in plan.stops:
            del world[stop.replica_id]
        for start in plan.starts:  # new replicas come up ready by the next pass
            world[start.replica_id] = running(start.replica_id, start.revision, index=len(world) + 10)
        clock.advance(1.0)
        if rollout and rollout.status == "complete":
            break
    assert rollout is not None and rollout.status == "complete"
    assert sorted(r.revision for r in world.values()) == ["bbbbbbb", "bbbbbbb"]


def test_rollout_that_never_gets_ready_stalls_and_stops_creating() -> None:
    clock = FakeClock()
    want = desired(2, revision="bbbbbbb", rollout={"max_surge": 1, "max_unavailable": 0, "progress_deadline_s": 30})
    world = [running("web-aaaaa-0", index=0), running("web-aaaaa-1", index=1)]
    plan = reconcile(want, world, clock.now())
    new = [running(s.replica_id, s.revision, ready=False, index=5) for s in plan.starts]
    assert len(new) == 1
    rollout = plan.rollouts["web"]
    clock.advance(31)
    stalled = DesiredState({"web": replace(want.services["web"], rollout=rollout)}, MACHINE)
    plan = reconcile(stalled, world + new, clock.now())
    assert plan.rollouts["web"].status == "stalled" and not plan.starts and not plan.stops
    assert any(c.kind == "RolloutStalled" for c in plan.conditions)


def test_placement_refusal_is_a_condition_not_an_overcommit() -> None:
    plan = reconcile(desired(3, resources={"gpu": 1}), [], 0.0)
    assert len(plan.starts) == 1 and plan.starts[0].placement.gpu_indices == (0,)
    assert [c.kind for c in plan.conditions] == ["PlacementRefused", "PlacementRefused"]


def test_restart_of_an_exited_replica_keeps_its_placement() -> None:
    crashed = ReplicaView(
        id="web-aaaaa-0", service="web", revision="aaaaaaa", phase="exited", crash_count=1, exited_at=0.0,
        placement=Placement(gpu_indices=(0,)),
    )
    plan = reconcile(desired(1, resources={"gpu": 1}), [crashed], 0.0)
    assert [s.placement.gpu_indices for s in plan.starts] == [(0,)]


def test_stopping_stops_everything_and_removed_services_are_stopped() -> None:
    observed = [running("web-aaaaa-0"), replace(running("api-x-0"), service="api")]
    plan = reconcile(replace(desired(1), stopping=True), observed, 0.0)
    assert sorted(s.replica_id for s in plan.stops) == ["api-x-0", "web-aaaaa-0"]
    plan = reconcile(desired(1), observed, 0.0)
    assert [(s.replica_id, s.reason) for s in plan.stops] == [("api-x-0", "ServiceRemoved")]


def test_revision_ids_change_with_template_not_with_replica_count() -> None:
    base = ServiceSpec(entrypoint="app:Svc")
    assert revision_id("web", base, "c1") == revision_id("web", base.model_copy(update={"replicas": 5}), "c1")
    assert revision_id("web", base, "c1") != revision_id("web", base, "c2")
    assert revision_id("web", base, "c1") != revision_id("web", base.model_copy(update={"env": {"A": "1"}}), "c1")
    assert revision_id("web", base, "c1") != revision_id("web", base, "c1", restart_nonce=1)


@pytest.mark.parametrize(("change", "rolls"), [
    ({"image": "registry.example.com/web:2"}, False),  # Kubernetes rendering only
    ({"max_inflight": 8}, False),  # the gateway's
    ({"restart": {"initial_backoff_s": 1}}, False),  # the controller's, applied live
    ({"rollout": {"max_surge": 2}}, False),
    ({"slo": {"availability": 0.99, "latency_target": 0.9}}, False),  # the alert rules'
    ({"routes": ["/v2"]}, False),
    ({"metrics_path": "/internal/metrics"}, True),  # the replica serves it
    ({"slo": {"latency_ms": 200}}, True),  # the replica's histogram has a bucket there
    ({"termination_grace_s": 5}, True),
])
def test_only_what_a_running_replica_sees_makes_a_new_revision(change: dict, rolls: bool) -> None:
    base = ServiceSpec(entrypoint="app:Svc")
    changed = ServiceSpec.model_validate({"entrypoint": "app:Svc", **change})
    assert (revision_id("web", base, "c1") != revision_id("web", changed, "c1")) is rolls
