"""services.<name>.depends_on as pure decisions: who may create replicas, who waits at `lichen down`."""

from __future__ import annotations

from lichen.control.ordering import dependents, stop_waiting_on, waiting_on
from lichen.control.plans import DesiredService, DesiredState, Machine, ReplicaView
from lichen.control.reconciling import reconcile
from lichen.spec.models import ServiceSpec

MACHINE = Machine(cpu_cores=4, memory_bytes=8 * 2**30)


def desired(stopping: bool = False, **services: tuple[int, list[str]]) -> DesiredState:
    """``name=(replicas, depends_on)``; each service's revision is ``r-<name>``."""
    return DesiredState({
        name: DesiredService(name, f"r-{name}", replicas,
                             ServiceSpec(entrypoint="app:Svc", replicas=replicas, depends_on=deps))
        for name, (replicas, deps) in services.items()
    }, MACHINE, stopping=stopping)


def replica(service: str, index: int = 0, ready: bool = True, phase: str = "running", revision: str = "",
            live: bool = True) -> ReplicaView:
    return ReplicaView(id=f"{service}-{index}", service=service, revision=revision or f"r-{service}", phase=phase,
                       ready=ready, published=ready, live=live, created_index=index)


def started(plan) -> set[str]:
    return {s.service for s in plan.starts}


def test_a_dependent_waits_until_every_dependency_has_its_desired_replicas_ready() -> None:
    state = desired(db=(2, []), cache=(1, []), api=(1, ["db", "cache"]))
    plan = reconcile(state, [], 0.0)
    assert started(plan) == {"db", "cache"}
    assert [(c.service, c.kind, c.message) for c in plan.conditions] == [
        ("api", "WaitingForDependencies", "api: waiting for db (0/2 ready), cache (0/1 ready)")]
    # one db replica ready, the other still starting: not enough
    observed = [replica("db", 0), replica("db", 1, ready=False), replica("cache")]
    assert waiting_on(state, observed) == {"api": "waiting for db (1/2 ready)"}
    assert "api" not in started(reconcile(state, observed, 1.0))
    # ready but failing liveness does not count
    observed = [replica("db", 0), replica("db", 1, live=False), replica("cache")]
    assert "api" in waiting_on(state, observed)
    observed = [replica("db", 0), replica("db", 1), replica("cache")]
    plan = reconcile(state, observed, 2.0)
    assert started(plan) == {"api"} and not plan.conditions


def test_chains_start_one_wave_at_a_time() -> None:
    state = desired(web=(1, ["api"]), api=(1, ["db"]), db=(1, []))
    assert started(reconcile(state, [], 0.0)) == {"db"}
    assert started(reconcile(state, [replica("db")], 1.0)) == {"api"}
    assert started(reconcile(state, [replica("db"), replica("api")], 2.0)) == {"web"}


def test_a_dependency_scaled_to_zero_is_ready_and_any_revision_counts() -> None:
    state = desired(db=(0, []), api=(1, ["db"]))
    assert waiting_on(state, []) == {}
    state = desired(db=(1, []), api=(1, ["db"]))
    mid_rollout = [replica("db", 0, revision="older")]  # the old revision still serves
    assert waiting_on(state, mid_rollout) == {}


def test_after_the_start_a_dependency_going_down_stops_nothing_and_crashes_still_restart() -> None:
    state = desired(db=(1, []), api=(1, ["db"]))
    crashed_api = ReplicaView(id="api-0", service="api", revision="r-api", phase="exited", crash_count=1,
                              exited_at=0.0, last_exit_code=1)
    observed = [replica("db", ready=False), replica("api", 1), crashed_api]
    plan = reconcile(desired(db=(1, []), api=(3, ["db"])), observed, 5.0)  # scaled up from 2 to 3
    assert not plan.stops
    assert [s.replica_id for s in plan.starts] == ["api-0"]  # the crashed replica restarts in place
    assert plan.conditions[0].kind == "WaitingForDependencies"  # ...but no new replica for the scale-up
    # a converged dependent with an unready dependency: nothing to do, nothing reported
    plan = reconcile(state, [replica("db", ready=False), replica("api")], 6.0)
    assert plan.empty and not plan.conditions


def test_a_rolling_update_of_a_dependent_pauses_while_a_dependency_is_unready() -> None:
    state = desired(db=(1, []), api=(2, ["db"]))
    observed = [replica("db", ready=False), replica("api", 0, revision="old"), replica("api", 1, revision="old")]
    plan = reconcile(state, observed, 0.0)
    assert not plan.stops and "api" not in started(plan)  # old replicas keep serving
    plan = reconcile(state, [replica("db"), *observed[1:]], 1.0)
    assert "api" in started(plan)  # the dependency is back: the rollout proceeds


def test_lichen_down_stops_dependents_first() -> None:
    state = desired(stopping=True, web=(1, ["api"]), api=(2, ["db"]), db=(1, []), other=(1, []))
    observed = [replica("web"), replica("api", 0), replica("api", 1), replica("db"), replica("other")]
    assert stop_waiting_on(state, observed) == {"api": "stops after web", "db": "stops after api"}
    plan = reconcile(state, observed, 0.0)
    assert sorted(s.replica_id for s in plan.stops) == ["other-0", "web-0"]
    assert {(c.service, c.kind) for c in plan.conditions} == {("api", "WaitingForDependents"),
                                                               ("db", "WaitingForDependents")}
    # web is still terminating: api waits; once web is gone api stops, then db
    terminating_web = replica("web", phase="terminating")
    assert {s.replica_id for s in reconcile(state, [terminating_web, *observed[1:4]], 1.0).stops} == set()
    assert {s.replica_id for s in reconcile(state, observed[1:4], 2.0).stops} == {"api-0", "api-1"}
    assert {s.replica_id for s in reconcile(state, observed[3:4], 3.0).stops} == {"db-0"}


def test_a_crash_looping_dependent_does_not_hold_up_the_stop_of_its_dependency_for_long() -> None:
    state = desired(stopping=True, db=(1, []), api=(1, ["db"]))
    looping = ReplicaView(id="api-0", service="api", revision="r-api", phase="exited", crash_count=4, exited_at=0.0)
    plan = reconcile(state, [looping, replica("db")], 1.0)
    assert [s.replica_id for s in plan.stops] == ["api-0"]  # removed at once (no process), db in the next pass


def test_dependents_are_inverted_edges() -> None:
    state = desired(web=(1, ["api", "db"]), api=(1, ["db"]), db=(1, []))
    assert dependents(state.services) == {"web": [], "api": ["web"], "db": ["api", "web"]}
