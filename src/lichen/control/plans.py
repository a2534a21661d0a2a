"""Plain data the control plane decides over: desired services, observed replicas, plans.

The runtime builds a :class:`DesiredState` and a list of :class:`ReplicaView`
each pass, calls :func:`lichen.control.reconciling.reconcile`, and applies the
:class:`Plan` it gets back. Nothing here does I/O; everything is immutable.
An autoscaler or a canary controller changes ``DesiredService.replicas`` and
``DesiredService.revision``; the loop needs no other change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from lichen.spec.models import ServiceSpec

Phase = Literal["pending", "running", "exited", "terminating"]
"""pending: record exists, no process yet; running: process alive;
exited: process gone, waiting for its restart; terminating: SIGTERM sent."""


@dataclass(frozen=True)
class Placement:
    """Resources granted to one replica."""

    cpu_cores: float | None = None
    memory_bytes: int | None = None
    gpu_indices: tuple[int, ...] = ()
    cpu_set: tuple[int, ...] = ()


@dataclass(frozen=True)
class Machine:
    """What this machine offers to replicas."""

    cpu_cores: float
    memory_bytes: int
    gpu_indices: tuple[int, ...] = ()


@dataclass(frozen=True)
class RolloutState:
    """Progress of the newest revision of one service (persisted between passes)."""

    revision: str
    started_at: float
    last_progress_at: float
    new_total: int = 0
    new_ready: int = 0
    status: Literal["progressing", "complete", "stalled"] = "progressing"
    reason: str = ""


@dataclass(frozen=True)
class CanaryPlan:
    """A canary in progress: ``revision`` of the service runs ``canary_replicas`` beside the full stable set."""

    stable_revision: str
    canary_replicas: int


@dataclass(frozen=True)
class DesiredService:
    name: str
    revision: str
    replicas: int
    spec: ServiceSpec
    rollout: RolloutState | None = None
    canary: CanaryPlan | None = None
    """set while a canary of ``revision`` runs: the stable revision keeps ``replicas``, the canary its own count"""


@dataclass(frozen=True)
class DesiredState:
    services: Mapping[str, DesiredService]
    machine: Machine
    stopping: bool = False
    """True while ``lichen down`` drains: every replica is stopped."""


@dataclass(frozen=True)
class ReplicaView:
    """One replica as observed this pass."""

    id: str
    service: str
    revision: str
    phase: Phase
    ready: bool = False
    """the readiness verdict of the probes"""
    published: bool = False
    """whether the replica is in the endpoint registry now"""
    live: bool = True
    """False once liveness failed ``failure_threshold`` times in a row"""
    placement: Placement = field(default_factory=Placement)
    crash_count: int = 0
    """consecutive crashes in the current crash loop (0: none)"""
    exited_at: float | None = None
    last_exit_code: int | None = None
    last_exit_reason: str = ""
    grace_s: float = 30.0
    created_index: int = 0
    """creation order within the service; larger is newer"""


@dataclass(frozen=True)
class StartReplica:
    service: str
    revision: str
    replica_id: str
    placement: Placement
    restart: bool
    reason: str


@dataclass(frozen=True)
class StopReplica:
    replica_id: str
    reason: str
    grace_s: float
    then_restart: bool = False
    """True: keep the record and restart it after exit (liveness failure)."""


@dataclass(frozen=True)
class SetReadiness:
    replica_id: str
    ready: bool
    reason: str


@dataclass(frozen=True)
class Condition:
    """A standing situation worth one event when it appears (placement refused, crash loop...)."""

    service: str
    kind: str
    message: str
    replica_id: str = ""
    permanent: bool = False
    """True when waiting cannot clear it (a replica asks for more than the machine has)."""


@dataclass(frozen=True)
class Plan:
    starts: tuple[StartReplica, ...] = ()
    stops: tuple[StopReplica, ...] = ()
    readiness: tuple[SetReadiness, ...] = ()
    conditions: tuple[Condition, ...] = ()
    rollouts: Mapping[str, RolloutState] = field(default_factory=dict)
    give_ups: Mapping[str, str] = field(default_factory=dict)
    """services whose rolling update should go back to the previous revision, with why (auto_rollback)"""
    wake_at: float | None = None
    """earliest time a pass would decide something new with no new observation"""

    @property
    def empty(self) -> bool:
        return not (self.starts or self.stops or self.readiness)
