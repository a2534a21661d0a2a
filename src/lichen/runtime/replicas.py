"""A supervised replica as the controller holds it: its durable record plus
the live parts (process handle, probe states and tasks) that die with the
controller and are rebuilt on adoption."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from lichen.control import probing
from lichen.runtime.processes import ProcessHandle
from lichen.runtime.state import ReplicaRecord

HOST = "127.0.0.1"  # replicas, probes and the control API listen on loopback only


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
