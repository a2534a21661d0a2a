"""What the controller holds: each service's desired state (:class:`ServiceState`) and each
supervised replica (:class:`Replica`): its durable record plus the live parts (process handle,
probe states and tasks) that die with the controller and are rebuilt on adoption."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from lichen.control import probing
from lichen.control.plans import Placement, ReplicaView, RolloutState
from lichen.runtime.processes import ProcessHandle
from lichen.runtime.state import ReplicaRecord
from lichen.spec.models import ServiceSpec

HOST = "127.0.0.1"  # replicas, probes and the control API listen on loopback only


@dataclass
class ServiceState:
    """Desired state of one service (what the API, an autoscaler or a canary edit)."""

    name: str
    spec: ServiceSpec
    revision: str
    replicas: int
    restart_nonce: int = 0
    rollout: RolloutState | None = None
    code_digest: str = ""


@dataclass
class Replica:
    record: ReplicaRecord
    handle: ProcessHandle | None = None
    started_mono: float | None = None
    exited_mono: float | None = None
    readiness: probing.ProbeState = field(default_factory=lambda: probing.initial_state("readiness"))
    liveness: probing.ProbeState = field(default_factory=lambda: probing.initial_state("liveness"))
    kill_at: float | None = None
    drain_version: int | None = None
    """set while a planned stop waits for the gateway: the registry version without this replica"""
    drain_since: float | None = None
    probe_tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def stop_probing(self) -> None:
        for task in self.probe_tasks:
            task.cancel()
        self.probe_tasks = []

    def view(self, grace_s: float) -> ReplicaView:
        """The replica as :func:`lichen.control.reconciling.reconcile` sees it (plain data)."""
        r = self.record
        placement = Placement(
            cpu_cores=r.placement.get("cpu_cores"),
            memory_bytes=r.placement.get("memory_bytes"),
            gpu_indices=tuple(r.placement.get("gpu_indices", ())),
            cpu_set=tuple(r.placement.get("cpu_set", ())),
        )
        return ReplicaView(
            id=r.id, service=r.service, revision=r.revision, phase=r.phase,  # type: ignore[arg-type]
            ready=self.readiness.passing, published=r.published, live=self.liveness.passing,
            placement=placement, crash_count=r.crash_count, exited_at=self.exited_mono,
            last_exit_code=r.last_exit_code, last_exit_reason=r.last_exit_reason,
            grace_s=grace_s, created_index=r.created_index,
        )
