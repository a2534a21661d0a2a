"""Alert-driven remediation under ``lichen up``: after each rule evaluation, act on what the firing alerts ask.

:class:`Remediator` is called by the embedded alert engine after every
evaluation round (:meth:`lichen.runtime.observing.Observing.after_evaluation`)
with the firing alerts. It builds a plain view of each service, asks the pure
:func:`lichen.control.remediation.decide`, and carries out the actions:

* ``restart_replica``: SIGKILL and restart in place, as a failed liveness probe does;
* ``drain_replica``: drained and stopped; the reconciler starts a replacement;
* ``rollback``: back to the previous revision (:mod:`lichen.runtime.rollbacks`),
  or the canary in progress is aborted (:mod:`lichen.runtime.canaries`);
* ``scale_up``: the desired count grows by ``scale_by``;
* ``run_job``: ``lichen run JOB`` in the app directory, its output in
  ``.lichen/logs/remediation-JOB.log``.

Every action is an event (``Remediation``, or ``RemediationDryRun`` with
``dry_run``) naming the alert that caused it; a match held back by a limit is
one ``RemediationHeld`` event per firing and reason. The actions taken are
kept in memory: a restarted controller starts with a clean cooldown.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from lichen.clocks import Clock
from lichen.control import remediation
from lichen.control.rolling import resolve_limits
from lichen.logs import get_logger
from lichen.runtime import rollbacks
from lichen.runtime.canaries import Canaries
from lichen.runtime.replicas import Replica, ServiceState
from lichen.runtime.workspaces import Workspace
from lichen.spec.models import AppSpec, ServiceSpec

log = get_logger("lichen.controller")


class RemediatedController(Protocol):
    """What the remediator reads and sets of the controller (a :class:`~lichen.runtime.controlling.Controller`)."""

    @property
    def clock(self) -> Clock: ...
    @property
    def workspace(self) -> Workspace: ...
    @property
    def app_spec(self) -> AppSpec | None: ...
    @property
    def services(self) -> Mapping[str, ServiceState]: ...
    @property
    def replicas(self) -> Mapping[str, Replica]: ...
    def event(self, service: str, kind: str, reason: str = "", message: str = "", replica: str = "") -> None: ...
    def set_replicas(self, service: str, replicas: int, reason: str = "requested", message: str = "") -> None: ...
    def stop_replica(self, replica_id: str, reason: str, then_restart: bool) -> bool: ...
    def revision_spec(self, service: str, revision: str) -> ServiceSpec | None: ...
    def save_desired(self, name: str) -> None: ...
    def wake(self) -> None: ...


class Remediator:
    def __init__(self, controller: RemediatedController, canaries: Canaries | None = None) -> None:
        self.controller = controller
        self.canaries = canaries
        self.taken: list[remediation.Taken] = []
        self.held_said: set[tuple[Any, ...]] = set()
        self.jobs: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ the round
    async def after_evaluation(self, alerts: Iterable[Any]) -> None:
        """Act on the firing alerts (the alert engine's ``AlertView``s) of one evaluation round."""
        controller = self.controller
        spec = controller.app_spec
        if spec is None or not spec.remediation.enabled:
            return
        now = controller.clock.wall()
        firing = [remediation.FiringAlert(a.rule, dict(a.labels), a.fired_at_s if a.fired_at_s is not None
                                          else a.active_at_s, a.active_at_s) for a in alerts]
        decision = remediation.decide(firing, spec.remediation, self.views(), self.taken, now)
        for alert, rule, why in decision.held:
            key = (alert.key, alert.fired_at, rule, why.split(":")[0])
            if key not in self.held_said:
                self.held_said.add(key)
                controller.event(alert.labels.get("service", ""), "RemediationHeld", alert.name, why)
        for action in decision.actions:
            self.taken.append(action.taken(now))
            done = True if action.dry_run else await self.carry_out(action)
            kind = "RemediationDryRun" if action.dry_run else "Remediation" if done else "RemediationFailed"
            controller.event(action.service, kind, action.kind, action.reason if done else
                             f"{action.reason}: could not be done (the replica or revision is gone)", action.replica)
            log.info("remediation", service=action.service, action=action.kind, alert=action.alert.name,
                     dry_run=action.dry_run, done=done)
        self.taken = [t for t in self.taken if t.at > now - max(spec.remediation.window_s, 86400.0)]

    def views(self) -> dict[str, remediation.ServiceView]:
        controller = self.controller
        clock = controller.clock
        offset = clock.wall() - clock.now()  # monotonic -> wall, for rollout start times
        views = {}
        for name, state in controller.services.items():
            mine = [r for r in controller.replicas.values()
                    if r.record.service == name and r.record.phase != "terminating"]
            unavailable = resolve_limits(state.spec.rollout.max_surge, state.spec.rollout.max_unavailable,
                                         state.replicas)[1]
            started = [state.rollout.started_at + offset] if state.rollout is not None else []
            if state.canary is not None:
                started.append(float(state.canary["state"].get("started_at", 0.0)) + offset)
            views[name] = remediation.ServiceView(
                name=name, desired=state.replicas, ready=sum(1 for r in mine if r.record.published),
                min_available=state.replicas - unavailable, previous_revision=state.previous_revision,
                rollout_started_at=max(started) if started else None, canary=state.canary is not None,
                autoscaled=state.spec.autoscale is not None, replicas=tuple(r.record.id for r in mine))
        return views

    # ------------------------------------------------------------ actions
    async def carry_out(self, action: remediation.Action) -> bool:
        """Do it; False when it could not be done (the replica stopped, or no revision to go back to)."""
        controller = self.controller
        reason = f"remediation: {action.alert.describe()}"
        if action.kind in ("restart_replica", "drain_replica"):
            return controller.stop_replica(action.replica, reason, then_restart=action.kind == "restart_replica")
        if action.kind == "rollback":
            if controller.services[action.service].canary is not None and self.canaries is not None:
                self.canaries.act(action.service, "abort", reason)
                return True
            return rollbacks.roll_back(controller, action.service, reason)
        if action.kind == "scale_up":
            state = controller.services[action.service]
            controller.set_replicas(action.service, state.replicas + action.scale_by, reason="remediation",
                                    message=action.reason)
        elif action.kind == "run_job":
            task = asyncio.create_task(self._run_job(action.job, action.service))
            self.jobs.add(task)
            task.add_done_callback(self.jobs.discard)
        return True

    async def _run_job(self, job: str, service: str) -> None:
        """``lichen run JOB`` in the app directory, as a person would; its exit is an event."""
        workspace = self.controller.workspace
        log_path = workspace.log_path(f"remediation-{job}")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as out:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-c", "from lichen.cli.main import run; run()", "run", job,
                cwd=workspace.app_dir, stdout=out, stderr=asyncio.subprocess.STDOUT)
            code = await process.wait()
        self.controller.event(service, "RemediationJobFinished", f"exit code {code}", f"job {job}, log {log_path}")

    async def aclose(self) -> None:
        for task in list(self.jobs):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def attach_remediation(controller: RemediatedController, observing: Any, canaries: Canaries | None) -> Remediator:
    """Act on alerts after each of ``observing``'s evaluation rounds (what ``lichen up`` does)."""
    remediator = Remediator(controller, canaries)
    observing.after_evaluation.append(remediator.after_evaluation)
    return remediator
