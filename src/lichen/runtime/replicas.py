"""What the controller holds: each service's desired state (:class:`ServiceState`) and each
supervised replica (:class:`Replica`): its durable record plus the live parts (process handle,
probe states and tasks) that die with the controller and are rebuilt on adoption."""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field
from typing import Any

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
    canary: dict[str, Any] | None = None
    previous_revision: str = ""
    """the revision a rolling update replaces (what ``rollout.auto_rollback`` goes back to); "" when none"""

    def saved_rollout(self) -> dict[str, Any] | None:
        """What the state store keeps of the rollout in progress (its ``rollout_json``), or None."""
        saved = {**(asdict(self.rollout) if self.rollout else {}), **({"canary": self.canary} if self.canary else {}),
                 **({"previous": self.previous_revision} if self.previous_revision else {})}
        return saved or None

    @classmethod
    def from_saved(cls, name: str, spec: ServiceSpec, row: dict[str, Any], code_digest: str) -> ServiceState:
        """A service's desired state as an earlier controller saved it (a canary resumes where it stood)."""
        saved = dict(row["rollout"] or {})
        canary, previous = saved.pop("canary", None), saved.pop("previous", "")
        return cls(name, spec, row["revision"], row["replicas"], row["restart_nonce"],
                   RolloutState(**saved) if saved else None, code_digest, canary, previous)
    """a canary of ``revision`` in progress: ``{"stable": revision, "state": CanaryState.to_dict()}``
    (:mod:`lichen.runtime.canaries`)"""


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
