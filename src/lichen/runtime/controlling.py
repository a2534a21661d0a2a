"""The controller: observe processes, reconcile, apply the plan, repeat.

One asyncio loop owns every replica. Each pass it polls processes (a child
exit wakes it at once through SIGCHLD), builds the desired state and the
observed :class:`~lichen.control.plans.ReplicaView` list, calls the pure
:func:`~lichen.control.reconciling.reconcile` and applies the plan: start
processes, withdraw a stopping replica from the endpoint registry and send
it SIGTERM once the gateway confirmed it no longer routes there
(:mod:`lichen.control.draining`; SIGKILL after the grace period), publish
endpoints, record events. Probes run as one small task per replica
and wake the loop when a verdict flips. Everything that must survive a
controller crash is written to the state store before the loop moves on.

Hooks for other components:

* ``controller.endpoints`` is the :class:`EndpointRegistry` (subscribe to it);
* ``controller.add_periodic(name, interval_s, fn)`` runs ``fn`` (sync or
  async) every ``interval_s`` as its own task, never blocking the loop;
* ``controller.set_replicas(service, n)`` and ``set_revision`` are what an
  autoscaler or a canary controller call; ``scale``/``restart``/``shutdown``
  back the control API.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict
from typing import Any

from prometheus_client import CollectorRegistry

from lichen.clocks import Clock, SystemClock
from lichen.control import backoff, probing, restarting
from lichen.control.draining import CONFIRM_TIMEOUT_S, DrainDecision, drain_decision
from lichen.control.plans import (
    CanaryPlan,
    DesiredService,
    DesiredState,
    Machine,
    Placement,
    Plan,
    ReplicaView,
)
from lichen.control.reconciling import reconcile
from lichen.control.rolling import rollout_event
from lichen.control.revisions import revision_id
from lichen.errors import ConfigError, UnknownServiceError
from lichen.gateway.configs import replica_urls
from lichen.logs import get_logger, snake_case
from lichen.runtime import (
    adopting,
    autoscaling,
    canaries,
    processes,
    replica_logs,
    reporting,
    rollbacks,
    supervising,
)
from lichen.runtime.endpoints import Endpoint, EndpointRegistry, Ingress
from lichen.runtime.launching import (CommandBuilder, lichen_serve_command, read_at_start_text, redact_text,
                                      replica_environment, replica_settings, with_redaction)
from lichen.runtime.metrics import ControllerMetrics
from lichen.runtime.probing import HttpProber, start_probing
from lichen.runtime.ports import pick_replica_port
from lichen.runtime.processes import LaunchRequest, ProcessLauncher
from lichen.runtime.replicas import HOST, Replica, ServiceState
from lichen.runtime.supervising import AuxiliaryProcess
from lichen.runtime.secret_stores import STORE_KEYS
from lichen.runtime.state import ReplicaRecord, StateStore
from lichen.runtime.workspaces import Workspace, detect_machine, ensure_redact_salt, read_secrets
from lichen.spec.models import AppSpec, RestartSpec, ServiceSpec

log = get_logger("lichen.controller")
LOG_MAX_BYTES = 10 * 2**20
EVENTS_KEPT = 100_000
DRAIN_WINDOW_S = 1.0
"""After SIGTERM a replica still accepts requests this long (``LICHEN_DRAIN_S``; at most half its grace)."""


class Controller:
    def __init__(
        self,
        workspace: Workspace,
        store: StateStore,
        *,
        launcher: ProcessLauncher | None = None,
        clock: Clock | None = None,
        machine: Machine | None = None,
        command: CommandBuilder = lichen_serve_command,
        prober: HttpProber | None = None,
        tick_s: float = 1.0,
    ) -> None:
        self.workspace = workspace
        self.store = store
        self.launcher = launcher or ProcessLauncher()
        self.clock = clock or SystemClock()
        self.machine = machine or detect_machine()
        self.command = command
        self.prober = prober or HttpProber()
        self.tick_s = tick_s
        self.adopt_wait_s = 5.0
        """how long a live replica found at startup may take to answer on its port"""
        self.confirm_drains = os.environ.get("LICHEN_DRAIN_CONFIRM", "on").strip().lower() not in ("off", "0", "false")
        """False (``LICHEN_DRAIN_CONFIRM=off``): the behaviour before confirmed drains, for bench/recovery.py only:
        SIGTERM a stopping replica at once and let the gateway find its new table by polling the file, as
        Kubernetes sends SIGTERM while endpoint removal still propagates (no preStop hook)"""
        self.drain_confirm_timeout_s = CONFIRM_TIMEOUT_S
        self.endpoints = EndpointRegistry()
        self.services: dict[str, ServiceState] = {}
        self.specs: dict[tuple[str, str], ServiceSpec] = {}
        self.replicas: dict[str, Replica] = {}
        self.stopping = False
        self.stopped = asyncio.Event()
        self._wake = asyncio.Event()
        self._conditions = reporting.StandingConditions()
        self._periodic: list[asyncio.Task[None]] = []
        self._periodic_specs: list[tuple[str, float, Callable[[], Any]]] = []
        self._secrets_cache: dict[str, dict[str, str]] = {}
        self.auxiliary: dict[str, AuxiliaryProcess] = {}
        self.app_spec: AppSpec | None = None
        """the spec last applied (the gateway renders its routes and settings from it)"""
        self.gateway: Ingress | None = None
        """the app's gateway under ``lichen up`` (:class:`lichen.runtime.gatewaying.SupervisedGateway`)"""
        self._startup: list[Callable[[], Awaitable[None]]] = []
        self.passes = 0
        self.metrics = CollectorRegistry(auto_describe=True)
        self._instruments = ControllerMetrics(self.metrics)
        self.autoscaling: dict[str, dict[str, Any]] = {}  # each autoscaled service's last decision, for status

    # ================================================================ desired
    def load_desired(self) -> None:
        """Restore desired state saved by an earlier controller (before ``apply``)."""
        for name, row in self.store.desired().items():
            found = self.store.revision_spec(name, row["revision"])
            if found is None:
                continue
            spec = ServiceSpec.model_validate_json(found[0])
            self.services[name] = ServiceState.from_saved(name, spec, row, found[1])
            self.specs[(name, row["revision"])] = spec

    def apply(self, app: AppSpec, code_digests: str | Mapping[str, str], *, starting: bool = False) -> list[str]:
        """Make ``app`` the desired state; returns the services whose revision changed.

        ``code_digests``: each service's code digest (``digesting.service_digests``), or one for all.
        ``starting``: the controller's first apply, where a saved canary that the new spec replaces is
        abandoned (back to its stable revision, with an event) instead of refused, since no controller runs
        that ``lichen rollout abort`` could ask.
        """
        for name, spec in app.services.items():
            self._secrets_cache[name] = read_secrets(spec.secrets, self.workspace, name)
        ensure_redact_salt(self.workspace)
        code_of = (lambda n: code_digests) if isinstance(code_digests, str) else (lambda n: code_digests.get(n, ""))
        digest_of = lambda n: with_redaction(code_of(n), read_at_start_text(app))  # noqa: E731
        for name, spec in app.services.items():  # refused before anything changes: one canary at a time
            current = self.services.get(name)
            new = revision_id(name, spec, digest_of(name), current.restart_nonce if current else 0)
            if starting and current is not None and current.canary is not None and new != current.revision:
                canaries.abandon(self, name, current, new)
            canaries.refuse_second_rollout(name, current, new)
        self.app_spec = app
        changed = []
        now_wall = self.clock.wall()
        for name, spec in app.services.items():
            current = self.services.get(name)
            nonce = current.restart_nonce if current else 0
            code_digest = digest_of(name)
            revision = revision_id(name, spec, code_digest, nonce)
            replicas = spec.replicas
            if spec.autoscale is not None:
                # the autoscaler owns the count: re-applying the spec keeps it, within the new min/max
                # (a Kubernetes Deployment under an HPA leaves replicas out of its manifest for this reason)
                if current is not None and current.spec.autoscale is not None:
                    replicas = current.replicas
                replicas = min(max(replicas, spec.autoscale.min), spec.autoscale.max)
            self.store.save_revision(name, revision, spec.model_dump_json(), code_digest, now_wall)
            self.specs[(name, revision)] = spec
            if current is None or current.revision != revision:
                changed.append(name)
                if current is not None:
                    self.event(name, "RevisionCreated", "spec or code changed", f"{current.revision} -> {revision}")
                self.services[name] = ServiceState(name, spec, revision, replicas, nonce, None, code_digest,
                                                   previous_revision=current.revision if current else "")
                if (current is not None and spec.rollout.strategy == "canary"
                        and (current.rollout is None or current.rollout.status == "complete")
                        and self._serving(name, current.revision, starting)):
                    # a new revision beside a serving one: a canary, judged step by step (lichen.runtime.canaries)
                    self.services[name].canary = canaries.begin(self.services[name], current.revision,
                                                                self.clock.now())
                    self.event(name, "CanaryStarted", "spec or code changed",
                               f"{revision} beside {current.revision}, steps {spec.rollout.steps}")
            else:
                if current.replicas != replicas:
                    self.event(name, "Scaled", "lichen.yaml", f"{current.replicas} -> {replicas}")
                current.spec, current.replicas, current.code_digest = spec, replicas, code_digest
            self.save_desired(name)
        for name in [n for n in self.services if n not in app.services]:
            del self.services[name]
            self.store.delete_desired(name)
            self.event(name, "ServiceRemoved", "not in lichen.yaml")
        self.wake()
        return changed

    def _serving(self, service: str, revision: str, starting: bool) -> bool:
        """Whether ``revision`` of ``service`` serves (a canary needs a stable revision to compare with); at
        start-up, before adoption has run, from the replicas the last controller recorded as published."""
        if any(e.revision == revision for e in self.endpoints.endpoints(service)):
            return True
        return starting and any(r.service == service and r.revision == revision and r.published
                                for r in self.store.replicas())

    def set_replicas(self, service: str, replicas: int, reason: str = "requested", message: str = "") -> None:
        state = self._service(service)
        if replicas < 0:
            raise ConfigError(f"replicas must be >= 0, got {replicas}")
        if state.replicas != replicas:
            self.event(service, "Scaled", reason, message or f"{state.replicas} -> {replicas}")
            state.replicas = replicas
            self.save_desired(service)
        self.wake()

    def scale(self, service: str, replicas: int) -> None:
        """``lichen scale``: refused for an autoscaled service (its count is the autoscaler's)."""
        autoscaling.refuse_manual_scale(service, self._service(service).spec.autoscale)
        self.set_replicas(service, replicas)

    def set_revision(self, service: str, revision: str, spec: ServiceSpec) -> None:
        """Point a service at another revision (canary/rollback hook); rolls with the service's settings."""
        state = self._service(service)
        self.specs[(service, revision)] = spec
        self.store.save_revision(service, revision, spec.model_dump_json(), "", self.clock.wall())
        state.spec, state.revision, state.rollout = spec, revision, None
        self.save_desired(service)
        self.wake()

    def restart(self, service: str) -> str:
        """Rolling restart: a new revision of the same spec, replaced with the rollout settings."""
        state = self._service(service)
        canaries.refuse_second_rollout(service, state, "")
        state.restart_nonce += 1
        revision = revision_id(service, state.spec, state.code_digest, state.restart_nonce)
        self.store.save_revision(service, revision, state.spec.model_dump_json(), state.code_digest, self.clock.wall())
        self.specs[(service, revision)] = state.spec
        self.event(service, "RestartRequested", "lichen restart", f"{state.revision} -> {revision}")
        state.previous_revision, state.revision, state.rollout = state.revision, revision, None
        self.save_desired(service)
        self.wake()
        return revision

    def stop_replica(self, replica_id: str, reason: str, then_restart: bool) -> bool:
        """Remediation: ``then_restart``: SIGKILL and restart in place, as a failed liveness probe does (a stuck
        replica drains nothing); else drain and stop it, and the reconciler starts a replacement."""
        replica = self.replicas.get(replica_id)
        if replica is None or replica.record.phase != "running":
            return False
        grace_s = 0.0 if then_restart else self.spec_of(replica.record).termination_grace_s
        self._stop(replica, reason, grace_s, then_restart, self.clock.now())
        self.wake()
        return True

    def shutdown(self) -> None:
        """Drain and stop every replica; ``run`` returns when none is left."""
        if not self.stopping:
            self.stopping = True
            self.event("", "ShutdownRequested", "lichen down")
        self.wake()

    def _service(self, service: str) -> ServiceState:
        try:
            return self.services[service]
        except KeyError:
            known = ", ".join(sorted(self.services)) or "none"
            raise UnknownServiceError(f"no service named {service!r} (services: {known})") from None

    def save_desired(self, name: str) -> None:
        s = self.services[name]
        self.store.save_desired(name, s.revision, s.replicas, s.restart_nonce, s.saved_rollout())

    # ================================================================ hooks
    def supervise(self, name: str, argv: list[str], env: dict[str, str] | None = None,
                  restart: RestartSpec | None = None, grace_s: float = 10.0) -> AuxiliaryProcess:
        """Keep a non-replica process running (restart with CrashLoopBackOff; stopped by ``shutdown``).

        Its output goes to ``.lichen/logs/<name>.log``; events use ``name`` as the service.
        """
        process = AuxiliaryProcess(name, argv, dict(env or {}), restart or RestartSpec(), grace_s)
        self.auxiliary[name] = process
        self.wake()
        return process

    def add_periodic(self, name: str, interval_s: float, fn: Callable[[], Any]) -> None:
        """Run ``fn`` every ``interval_s`` in its own task; errors are logged, never raised into the loop."""
        self._periodic_specs.append((name, interval_s, fn))
        if self.passes > 0:  # run() already started the registered ones (it starts them before its first pass)
            self._periodic.append(asyncio.create_task(self._periodic_loop(name, interval_s, fn)))

    async def _periodic_loop(self, name: str, interval_s: float, fn: Callable[[], Any]) -> None:
        while True:
            await self.clock.sleep(interval_s)
            try:
                result = fn()
                if inspect.isawaitable(result):
                    await result
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("periodic_task_failed", task=name)

    def add_startup(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Await ``fn`` once in :meth:`run`, after replica adoption and before the first pass (the gateway
        re-adopts its process there)."""
        self._startup.append(fn)

    def wake(self) -> None:
        self._wake.set()

    def event(self, service: str, kind: str, reason: str = "", message: str = "", replica: str = "") -> None:
        self.store.add_event(self.clock.wall(), service, kind, reason, message, replica)
        log.info(snake_case(kind), service=service, replica=replica, reason=reason, message=message)

    # ================================================================ loop
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            loop.add_signal_handler(signal.SIGCHLD, self.wake)
        await self.adopt()
        for startup in self._startup:
            await startup()
        for name, interval_s, fn in self._periodic_specs:
            self._periodic.append(asyncio.create_task(self._periodic_loop(name, interval_s, fn)))
        self._periodic.append(asyncio.create_task(self._periodic_loop("log rotation", 10.0, self._rotate_logs)))
        try:
            while True:
                wake_at = self.step()
                if self.stopping and not self.replicas and not any(a.handle for a in self.auxiliary.values()):
                    break
                timeout = self.tick_s if wake_at is None else max(0.0, min(self.tick_s, wake_at - self.clock.now()))
                self._wake.clear()
                await self.clock.wait_for(self._wake, timeout)
        finally:
            for task in self._periodic:
                task.cancel()
            for replica in self.replicas.values():
                replica.stop_probing()
            with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
                loop.remove_signal_handler(signal.SIGCHLD)
            self.stopped.set()

    def step(self) -> float | None:
        """One pass: observe, reconcile, apply. Returns when the next pass is due, if sooner than a tick."""
        now = self.clock.now()
        self._observe(now)
        plan = reconcile(self.desired_state(), self.views(now), now)
        self._apply(plan, now)
        aux_wake = self._supervise_auxiliary(now)
        drain_wake = self._signal_drained(now)
        self.passes += 1
        self._instruments.update(self.replicas.values())
        self._instruments.loop.observe(self.clock.now() - now)
        # an auxiliary process (the gateway) due for a restart, or a drain timeout, may come sooner
        return min((t for t in (plan.wake_at, aux_wake, drain_wake) if t is not None), default=None)

    def desired_state(self) -> DesiredState:
        services = {
            name: DesiredService(name, s.revision, s.replicas, s.spec, s.rollout,
                                 CanaryPlan(s.canary["stable"], canaries.canary_plan_replicas(s)) if s.canary else None)
            for name, s in self.services.items()
        }
        return DesiredState(services, self.machine, stopping=self.stopping)

    def views(self, now: float) -> list[ReplicaView]:
        return [replica.view(self.spec_of(replica.record).termination_grace_s) for replica in self.replicas.values()]

    def spec_of(self, record: ReplicaRecord) -> ServiceSpec:
        """The spec of a replica's revision (from the state store when this controller has not seen it)."""
        return self.revision_spec(record.service, record.revision) or ServiceSpec(entrypoint="unknown:Unknown")

    def revision_spec(self, service: str, revision: str) -> ServiceSpec | None:
        """The spec of one revision of a service, from memory or the state store; None if never saved."""
        spec = self.specs.get((service, revision))
        if spec is None:
            found = self.store.revision_spec(service, revision)
            if found is None:
                return None
            spec = self.specs[(service, revision)] = ServiceSpec.model_validate_json(found[0])
        return spec

    # ================================================================ observe
    def _observe(self, now: float) -> None:
        for replica in list(self.replicas.values()):
            record = replica.record
            if replica.handle is None or record.phase not in ("running", "terminating"):
                continue
            code = self.launcher.poll(replica.handle)
            if code is None:
                if replica.kill_at is not None and now >= replica.kill_at:
                    self.launcher.kill(replica.handle)
                    replica.kill_at = None
                    self.event(record.service, "Killed", "grace period expired", "SIGKILL", record.id)
                continue
            self._on_exit(replica, code, now)

    def _on_exit(self, replica: Replica, code: int, now: float) -> None:
        record = replica.record
        replica.stop_probing()
        replica.drain_version = replica.drain_since = None
        self._unpublish(replica)
        spec = self.spec_of(record)
        oom = self.launcher.oom_killed(replica.handle, self.workspace.log_path(record.id),  # type: ignore[arg-type]
                                       spec.resources.memory is not None)
        if replica.handle is not None:
            self.launcher.release(replica.handle)
        replica.handle = None
        record.pid = record.create_time = None
        ran_for = now - replica.started_mono if replica.started_mono is not None else 0.0
        verdict = restarting.replica_exit(code, oom=oom, stop_reason=record.stop_reason, then_restart=record.then_restart,
                                          ran_for_s=ran_for, crash_count=record.crash_count, restart=spec.restart)
        self.event(record.service, verdict.event.kind, verdict.event.reason, verdict.event.message, record.id)
        if verdict.planned:
            self._forget(replica)
            return
        record.phase, record.exited_at, replica.exited_mono = "exited", self.clock.wall(), now
        record.crash_count, record.last_exit_code, record.last_exit_reason = (verdict.crash_count, verdict.exit_code,
                                                                              verdict.reason)
        record.stop_reason, record.then_restart = "", False
        self.store.save_replica(record)

    def _forget(self, replica: Replica) -> None:
        self.replicas.pop(replica.record.id, None)
        self.store.delete_replica(replica.record.id)
        self._conditions.forget(replica.record.id)
        self._instruments.forget(replica.record.service, replica.record.id)

    # ================================================================ apply
    def _apply(self, plan: Plan, now: float) -> None:
        for change in plan.readiness:
            replica = self.replicas.get(change.replica_id)
            if replica is None:
                continue
            if change.ready:
                self._publish(replica)
            else:
                self._unpublish(replica, change.reason)
        for stop in plan.stops:
            replica = self.replicas.get(stop.replica_id)
            if replica is not None:
                self._stop(replica, stop.reason, stop.grace_s, stop.then_restart, now)
        for start in plan.starts:
            self._start(start.service, start.revision, start.replica_id, start.placement, start.restart, now)
        for condition in self._conditions.update(plan.conditions):
            self.event(condition.service, condition.kind, "", condition.message, condition.replica_id)
        for name, rollout in plan.rollouts.items():
            state = self.services.get(name)
            if state is None or state.rollout == rollout:
                continue
            event = rollout_event(state.rollout, rollout)
            state.rollout = rollout
            if event is not None:
                self.event(name, *event)
            self.save_desired(name)
        for name, reason in plan.give_ups.items():
            rollbacks.roll_back(self, name, reason)

    def conditions(self, service: str) -> list[dict[str, Any]]:
        """The standing conditions of a service (placement refused, crash loop, stalled rollout)."""
        return self._conditions.of(service)

    def _publish(self, replica: Replica) -> None:
        record = replica.record
        if record.port is None:
            return
        self.endpoints.add(Endpoint(record.service, record.revision, record.id, HOST, record.port))
        if not record.published:
            record.published = True
            self.store.save_replica(record)
            self.event(record.service, "Ready", "readiness passed", f"{HOST}:{record.port}", record.id)

    def _unpublish(self, replica: Replica, reason: str = "exited") -> None:
        record = replica.record
        self.endpoints.remove(record.id)
        if record.published:
            record.published = False
            self.store.save_replica(record)
            self.event(record.service, "Unready", reason, replica.readiness.last_outcome, record.id)

    def _stop(self, replica: Replica, reason: str, grace_s: float, then_restart: bool, now: float) -> None:
        record = replica.record
        if record.phase in ("exited", "pending") or replica.handle is None:
            if then_restart:
                return
            self.event(record.service, "Removed", reason, "", record.id)
            self._forget(replica)
            return
        record.phase, record.stop_reason, record.then_restart = "terminating", reason, then_restart
        self.store.save_replica(record)
        replica.stop_probing()
        self._unpublish(replica, "stopping")
        if grace_s <= 0:
            self.launcher.kill(replica.handle)
            detail = "SIGKILL"
            if reason == "LivenessFailed":  # say which probe failed how, as Kubernetes' event does
                probe, state = self.spec_of(record).probes.liveness, replica.liveness
                detail += f"; liveness GET {probe.path}: {state.last_outcome or 'failed'} {state.failures}x in a row"
            self.event(record.service, "Killed", reason, detail, record.id)
        else:
            # SIGTERM once the gateway confirmed it no longer routes here (_signal_drained, this very pass if
            # nothing routes through a gateway): a request already on its way is never refused.
            replica.drain_version, replica.drain_since = self.endpoints.version, now
        self.wake()

    def _signal_drained(self, now: float) -> float | None:
        """SIGTERM every stopping replica the gateway no longer routes to; returns the next drain timeout."""
        gateway = self.gateway.view() if self.gateway is not None and self.confirm_drains else None
        wake: float | None = None
        for replica in self.replicas.values():
            if replica.drain_version is None or replica.drain_since is None or replica.handle is None:
                continue
            decision = drain_decision(replica.drain_version, replica.drain_since, now, gateway, stopping=self.stopping,
                                      confirm_timeout_s=self.drain_confirm_timeout_s)
            if decision.signal:
                self._terminate(replica, decision, now)
            elif decision.wake_at is not None:
                wake = decision.wake_at if wake is None else min(wake, decision.wake_at)
        return wake

    def _terminate(self, replica: Replica, decision: DrainDecision, now: float) -> None:
        record = replica.record
        assert replica.handle is not None
        grace_s = self.spec_of(record).termination_grace_s
        replica.drain_version = replica.drain_since = None
        self.launcher.terminate(replica.handle)
        replica.kill_at = now + grace_s
        self.event(record.service, "Stopping", record.stop_reason, f"SIGTERM ({decision.reason}), grace {grace_s:g}s",
                   record.id)

    def _start(self, service: str, revision: str, replica_id: str, placement: Placement, restart: bool,
               now: float) -> None:
        spec = self.revision_spec(service, revision)  # a canary's stable revision may be known only to the store
        if spec is None:
            self.event(service, "StartFailed", "unknown revision", f"no spec saved for revision {revision}", replica_id)
            return
        replica = self.replicas.get(replica_id)
        if replica is None:
            index = 1 + max((r.record.created_index for r in self.replicas.values() if r.record.service == service),
                            default=-1)
            record = ReplicaRecord(id=replica_id, service=service, revision=revision, created_index=index,
                                   phase="pending", placement=asdict(placement))
            replica = self.replicas[replica_id] = Replica(record)
        record = replica.record
        try:
            port = pick_replica_port(HOST, self.app_spec.replica_ports if self.app_spec else None,  # replica_ports
                                     {r.record.port for r in self.replicas.values() if r.handle and r.record.port})
            env = self._replica_env(service, revision, replica_id, spec, placement, port)
            request = LaunchRequest(
                name=replica_id, argv=self.command(service, spec, port, self.workspace.app_dir), env=env,
                cwd=self.workspace.app_dir, log_path=self.workspace.log_path(replica_id),
                memory_bytes=placement.memory_bytes, cpu_cores=placement.cpu_cores, cpu_set=placement.cpu_set,
            )
            handle = self.launcher.launch(request)
        except OSError as exc:
            record.phase, record.last_exit_reason, record.last_exit_code = "exited", "StartFailed", None
            record.crash_count = backoff.next_crash_count(record.crash_count, 0.0, spec.restart)
            replica.exited_mono = now
            self.store.save_replica(record)
            self.event(service, "StartFailed", type(exc).__name__, str(exc), replica_id)
            return
        replica.handle = handle
        replica.started_mono, replica.exited_mono, replica.kill_at = now, None, None
        replica.readiness = probing.initial_state("readiness")
        replica.liveness = probing.initial_state("liveness")
        record.phase, record.pid, record.create_time, record.port = "running", handle.pid, handle.create_time, port
        record.started_at, record.published, record.stop_reason, record.then_restart = self.clock.wall(), False, "", False
        if restart:
            record.restarts += 1
            self._instruments.restarts.labels(service).inc()
        self.store.save_replica(record)
        self.event(service, "Restarted" if restart else "Started", "", f"pid {handle.pid} port {port}", replica_id)
        self._start_probing(replica)

    def _replica_env(self, service: str, revision: str, replica_id: str, spec: ServiceSpec, placement: Placement,
                     port: int) -> dict[str, str]:
        settings = replica_settings(service, revision, replica_id, port, spec, self.workspace.app_dir, DRAIN_WINDOW_S,
                                    replica_urls(self.app_spec, self.gateway.url if self.gateway is not None else None),
                                    redact=redact_text(self.app_spec), redact_salt_file=self.workspace.redact_salt_file,
                                    tracing=self.app_spec.observability.tracing if self.app_spec else None)
        secrets: dict[str, str] = {}
        if spec.secrets:
            cached = self._secrets_cache.get(service)
            secrets = cached if cached is not None else read_secrets(spec.secrets, self.workspace, service)
            self._secrets_cache[service] = secrets
        return replica_environment(os.environ, self.secret_names(), settings, spec, placement,
                                   self.launcher.use_cgroups, secrets)

    # ================================================================ probes
    def _start_probing(self, replica: Replica) -> None:
        start_probing(replica, self.spec_of(replica.record).probes, self.prober, self.clock, self.wake)

    # ================================================================ adoption
    async def adopt(self) -> None:
        """Re-adopt replicas an earlier controller left running, or clean them up (:mod:`adopting`)."""
        await adopting.adopt_into(self)

    def start_probing(self, replica: Replica) -> None:
        self._start_probing(replica)

    def _supervise_auxiliary(self, now: float) -> float | None:
        return supervising.step_auxiliary(self.auxiliary.values(), self.launcher, self.workspace, now, self.stopping,
                                          self.event, hidden_env=self.secret_names() | STORE_KEYS)

    def secret_names(self) -> frozenset[str]:
        """Every secret name the app declares: kept out of the environment a process inherits from the
        controller, so a secret reaches only the services (and jobs) that list it."""
        names: set[str] = set()
        for state in self.services.values():  # services of an earlier spec may still run
            names.update(state.spec.secrets)
        if self.app_spec is not None:
            names.update(self.app_spec.secret_names())
        return frozenset(names)

    # ================================================================ misc
    def _rotate_logs(self) -> None:
        for replica_id in list(self.replicas):
            processes.rotate_log(self.workspace.log_path(replica_id), LOG_MAX_BYTES)
        replica_logs.prune_replica_logs(self.workspace, self.services, self.replicas)  # docs/control-plane.md#logs
        self.store.prune_events(keep=EVENTS_KEPT)

    def status(self) -> dict[str, Any]:
        """Everything ``lichen status`` shows, as plain data (:mod:`lichen.runtime.reporting`)."""
        return reporting.status_report(reporting.StatusSnapshot(
            app_dir=self.workspace.app_dir, now=self.clock.now(), stopping=self.stopping,
            enforcement=self.launcher.enforcement, services=self.services,
            replicas=[(r, self.spec_of(r.record)) for r in self.replicas.values()],
            conditions={name: self.conditions(name) for name in self.services},
            endpoints=self.endpoints.by_service(), endpoints_version=self.endpoints.version,
            processes=list(self.auxiliary.values()), gateway=self.gateway.status() if self.gateway else None,
            log_path=self.workspace.log_path, autoscaling=self.autoscaling,
        ))

    def child_pids(self) -> list[int]:
        return [r.record.pid for r in self.replicas.values() if r.record.pid]
