"""Reconcile: ``(desired, observed, now) -> Plan``, level-based.

Each pass compares what should run with what does and returns every action
needed to close the gap, so a missed event is repaired by the next pass.
Per service it (1) kills replicas that failed liveness (they restart in
place, subject to CrashLoopBackOff), (2) restarts exited replicas whose
backoff has elapsed, (3) scales the current revision or steps a rolling
update from older revisions, placing new replicas or refusing what does not
fit, and (4) publishes or withdraws replicas from the endpoint registry to
match their readiness. ``depends_on`` holds step (3) back until a service's
dependencies are ready, and orders ``lichen down`` (:mod:`lichen.control.ordering`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from lichen.control import backoff, ordering
from lichen.control.placing import Refusal, place
from lichen.control.plans import (
    Condition,
    DesiredService,
    DesiredState,
    Placement,
    Plan,
    ReplicaView,
    RolloutState,
    SetReadiness,
    StartReplica,
    StopReplica,
)
from lichen.control.rolling import OldReplica, advance_rollout, give_up_reason, resolve_limits, rolling_step


def serving(replica: ReplicaView) -> bool:
    """Running, ready and alive: the replica may receive traffic."""
    return replica.phase == "running" and replica.ready and replica.live


def replica_name(service: str, revision: str, index: int) -> str:
    return f"{service}-{revision[:5]}-{index}"


class _Pass:
    def __init__(self, desired: DesiredState, observed: Sequence[ReplicaView], now: float) -> None:
        self.desired = desired
        self.observed = observed
        self.now = now
        self.starts: list[StartReplica] = []
        self.stops: list[StopReplica] = []
        self.readiness: list[SetReadiness] = []
        self.conditions: list[Condition] = []
        self.rollouts: dict[str, RolloutState] = {}
        self.give_ups: dict[str, str] = {}
        self.wake: list[float] = []
        self.stopping_ids: set[str] = set()
        self.granted: list[Placement] = [r.placement for r in observed]
        self.taken_ids: set[str] = {r.id for r in observed}
        self.held: dict[str, str] = {}
        """services that may not create replicas yet (``depends_on``), with what they wait for"""

    # ------------------------------------------------------------ helpers
    def stop(self, replica: ReplicaView, reason: str, then_restart: bool = False, grace_s: float | None = None) -> None:
        if replica.id in self.stopping_ids:
            return
        self.stopping_ids.add(replica.id)
        grace = replica.grace_s if grace_s is None else grace_s
        self.stops.append(StopReplica(replica.id, reason, grace, then_restart=then_restart))

    def new_replica(self, ds: DesiredService, index: int, reason: str, revision: str | None = None) -> bool:
        revision = revision or ds.revision
        granted = place(ds.spec.resources, self.desired.machine, self.granted)
        if isinstance(granted, Refusal):
            self.conditions.append(Condition(ds.name, "PlacementRefused", f"{ds.name}: {granted}",
                                             permanent=granted.never_fits))
            return False
        number = 0
        while replica_name(ds.name, revision, number) in self.taken_ids:
            number += 1
        replica_id = replica_name(ds.name, revision, number)
        self.taken_ids.add(replica_id)
        self.granted.append(granted)
        self.starts.append(StartReplica(ds.name, revision, replica_id, granted, restart=False, reason=reason))
        return True

    # --------------------------------------------------------------- pass
    def run(self) -> Plan:
        by_service: dict[str, list[ReplicaView]] = defaultdict(list)
        for replica in self.observed:
            by_service[replica.service].append(replica)
        if self.desired.stopping:
            # dependents drain first: a service stops once nothing that depends on it has a replica left
            waiting = ordering.stop_waiting_on(self.desired, self.observed)
            for name, why in sorted(waiting.items()):
                self.conditions.append(Condition(name, "WaitingForDependents", f"{name}: {why}"))
            for replica in self.observed:
                if replica.phase != "terminating" and replica.service not in waiting:
                    self.stop(replica, "Stopped")
        else:
            self.held = ordering.waiting_on(self.desired, self.observed)
            for name in sorted(set(by_service) | set(self.desired.services)):
                ds = self.desired.services.get(name)
                replicas = by_service.get(name, [])
                if ds is None:
                    for replica in replicas:
                        if replica.phase != "terminating":
                            self.stop(replica, "ServiceRemoved")
                else:
                    self.service(ds, replicas)
        for replica in self.observed:
            want = serving(replica) and replica.id not in self.stopping_ids
            if want != replica.published:
                reason = "ready" if want else ("stopping" if replica.id in self.stopping_ids else "not ready")
                self.readiness.append(SetReadiness(replica.id, want, reason))
        return Plan(
            starts=tuple(self.starts),
            stops=tuple(self.stops),
            # make before break: publish new endpoints before withdrawing old ones
            readiness=tuple(sorted(self.readiness, key=lambda change: not change.ready)),
            conditions=tuple(self.conditions),
            rollouts=self.rollouts,
            give_ups=self.give_ups,
            wake_at=min(self.wake) if self.wake else None,
        )

    def service(self, ds: DesiredService, replicas: list[ReplicaView]) -> None:
        members = [r for r in replicas if r.phase != "terminating"]
        # (1) liveness failures are killed and restart in place
        for replica in members:
            if replica.phase == "running" and not replica.live:
                # a process that stopped answering drains nothing: SIGKILL at once
                self.stop(replica, "LivenessFailed", then_restart=True, grace_s=0.0)
        # (2) exited replicas restart when their backoff allows
        restartable: list[ReplicaView] = []
        for replica in members:
            if replica.phase in ("exited", "pending"):
                restartable.append(replica)
        # (3) scale or roll (or run a canary beside the stable revision)
        if ds.canary is not None:
            self.canary(ds, members, replicas)
            self.restart(ds, restartable)
            return
        new = [r for r in members if r.revision == ds.revision]
        old = [r for r in members if r.revision != ds.revision]
        next_index = max((r.created_index for r in replicas), default=-1) + 1
        rollout = ds.rollout if ds.rollout and ds.rollout.revision == ds.revision else None
        surplus: list[ReplicaView] = []
        if len(new) > ds.replicas:
            ranked = sorted(new, key=lambda r: (serving(r), r.phase == "running", -r.created_index))
            surplus = ranked[: len(new) - ds.replicas]
            for replica in surplus:
                self.stop(replica, "ScaledDown")
            new = [r for r in new if r not in surplus]
        new_ready = sum(1 for r in new if serving(r))
        waiting = self.held.get(ds.name)
        if waiting is not None and (old or len(new) < ds.replicas):
            # depends_on: no replica is created, and a rolling update pauses (old replicas keep serving)
            self.conditions.append(Condition(ds.name, "WaitingForDependencies", f"{ds.name}: {waiting}"))
        elif old:
            if rollout is None:
                rollout = RolloutState(revision=ds.revision, started_at=self.now, last_progress_at=self.now)
            surge, unavailable = resolve_limits(ds.spec.rollout.max_surge, ds.spec.rollout.max_unavailable, ds.replicas)
            step = rolling_step(
                ds.replicas,
                len(new),
                new_ready,
                [OldReplica(r.id, serving(r), r.created_index) for r in old],
                surge,
                unavailable,
                may_scale_up=rollout.status != "stalled",
            )
            for k in range(step.start_new):
                self.new_replica(ds, next_index + k, f"rolling update to {ds.revision}")
            for replica_id in step.stop_old:
                self.stop(next(r for r in old if r.id == replica_id), "RolledOut")
        elif len(new) < ds.replicas:
            for k in range(ds.replicas - len(new)):
                self.new_replica(ds, next_index + k, "scale up" if new else "desired replicas")
        if rollout is not None:
            created = sum(1 for s in self.starts if s.service == ds.name and s.revision == ds.revision)
            old_left = sum(1 for r in old if r.id not in self.stopping_ids)
            rollout = advance_rollout(
                rollout,
                len(new) + created,
                new_ready,
                old_left,
                ds.replicas,
                ds.spec.rollout.progress_deadline_s,
                self.now,
            )
            self.rollouts[ds.name] = rollout
            if rollout.status == "progressing":
                self.wake.append(rollout.last_progress_at + ds.spec.rollout.progress_deadline_s)
            elif rollout.status == "stalled":
                self.conditions.append(Condition(ds.name, "RolloutStalled", f"{ds.name}: {rollout.reason}"))
            if old:  # only while an older revision still serves: there is something to go back to
                looping = sum(1 for r in new if r.phase == "exited" and backoff.in_crash_loop(r.crash_count))
                reason = give_up_reason(rollout, looping, ds.spec.rollout.auto_rollback)
                if reason is not None:
                    self.give_ups[ds.name] = reason
        self.restart(ds, restartable)

    def canary(self, ds: DesiredService, members: list[ReplicaView], replicas: list[ReplicaView]) -> None:
        """A canary: the stable revision keeps its full count (capacity never drops while traffic moves), the
        canary revision runs its own count, and a replica of any third revision is stopped."""
        assert ds.canary is not None
        next_index = max((r.created_index for r in replicas), default=-1) + 1
        for revision, count, why in ((ds.canary.stable_revision, ds.replicas, "stable revision"),
                                     (ds.revision, ds.canary.canary_replicas, f"canary of {ds.revision}")):
            mine = [r for r in members if r.revision == revision]
            if len(mine) > count:
                ranked = sorted(mine, key=lambda r: (serving(r), r.phase == "running", -r.created_index))
                for replica in ranked[: len(mine) - count]:
                    self.stop(replica, "ScaledDown")
            elif len(mine) < count and ds.name not in self.held:
                for k in range(count - len(mine)):
                    if self.new_replica(ds, next_index, why, revision):
                        next_index += 1
        for replica in members:
            if replica.revision not in (ds.revision, ds.canary.stable_revision):
                self.stop(replica, "Superseded")

    def restart(self, ds: DesiredService, restartable: list[ReplicaView]) -> None:
        for replica in restartable:
            if replica.id in self.stopping_ids:
                continue
            exited_at = replica.exited_at if replica.exited_at is not None else self.now
            due = backoff.restart_at(exited_at, replica.crash_count, ds.spec.restart)
            if replica.phase == "pending" or due <= self.now:
                self.starts.append(
                    StartReplica(
                        ds.name,
                        replica.revision,
                        replica.id,
                        replica.placement,
                        restart=replica.phase == "exited",
                        reason=f"restart after {replica.last_exit_reason or 'exit'}"
                        if replica.phase == "exited"
                        else "start",
                    )
                )
            else:
                self.wake.append(due)
                if backoff.in_crash_loop(replica.crash_count):
                    code = "" if replica.last_exit_code is None else f" (exit code {replica.last_exit_code})"
                    self.conditions.append(
                        Condition(
                            ds.name,
                            "CrashLoopBackOff",
                            f"{replica.id}: {replica.last_exit_reason or 'exited'}{code}; "
                            f"back-off {backoff.restart_delay_s(replica.crash_count, ds.spec.restart):g}s",
                            replica.id,
                        )
                    )


def reconcile(desired: DesiredState, observed: Sequence[ReplicaView], now: float) -> Plan:
    """Everything to do now to move ``observed`` toward ``desired``."""
    return _Pass(desired, observed, now).run()
