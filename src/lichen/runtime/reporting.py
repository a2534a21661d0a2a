"""``lichen status`` as plain data: services, replicas (with CrashLoopBackOff and log tails), endpoints.

:func:`status_report` reads a :class:`StatusSnapshot` (plain data the
controller takes of itself) and returns the dict the control API serves.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lichen.control import backoff
from lichen.control.canary_analysis import canary_replicas
from lichen.control.plans import Condition
from lichen.runtime import processes
from lichen.runtime.endpoints import Endpoint
from lichen.runtime.replicas import Replica, ServiceState
from lichen.runtime.supervising import AuxiliaryProcess
from lichen.spec.models import ServiceSpec

LOG_TAIL_LINES = 15


@dataclass(frozen=True)
class StatusSnapshot:
    """What ``lichen status`` is made of, taken by the controller at ``now`` (monotonic seconds)."""

    app_dir: Path
    now: float
    stopping: bool
    enforcement: str
    services: Mapping[str, ServiceState]
    replicas: Sequence[tuple[Replica, ServiceSpec]]
    """each replica with the spec of its revision"""
    conditions: Mapping[str, list[dict[str, Any]]]
    """standing conditions per service"""
    endpoints: Mapping[str, list[Endpoint]]
    endpoints_version: int
    processes: Sequence[AuxiliaryProcess]
    gateway: dict[str, Any] | None
    log_path: Callable[[str], Path]
    autoscaling: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    """each autoscaled service's last decision (desired, ready, metric value, panic, reason)"""


def status_report(snapshot: StatusSnapshot) -> dict[str, Any]:
    """Everything ``lichen status`` shows, as plain data."""
    now = snapshot.now
    services = {}
    for name, s in snapshot.services.items():
        services[name] = {
            "revision": s.revision, "desired": s.replicas,
            "ready": sum(1 for r, _ in snapshot.replicas if r.record.service == name and r.record.published),
            "rollout": asdict(s.rollout) if s.rollout else None,
            "conditions": list(snapshot.conditions.get(name, [])),
            "revisions": revision_counts(s.revision, [r.record for r, _ in snapshot.replicas if r.record.service == name]),
            "autoscale": snapshot.autoscaling.get(name),
            "canary": ({"stable": s.canary["stable"], "weight": s.canary["state"].get("weight"),
                        "replicas": canary_replicas(s.replicas, int(s.canary["state"].get("weight", 0))),
                        "paused": bool(s.canary["state"].get("paused"))} if s.canary else None),
        }
    replicas = []
    for replica, spec in sorted(snapshot.replicas, key=lambda rs: (rs[0].record.service, rs[0].record.created_index)):
        r = replica.record
        state = "Ready" if r.published else {"running": "Starting" if not replica.readiness.answered else "NotReady",
                                             "terminating": "Terminating", "pending": "Pending"}.get(r.phase, "Exited")
        restart_in = None
        if r.phase == "exited":
            if backoff.in_crash_loop(r.crash_count):
                state = "CrashLoopBackOff"
            exited = replica.exited_mono if replica.exited_mono is not None else now
            restart_in = max(0.0, backoff.restart_at(exited, r.crash_count, spec.restart) - now)
        entry = {
            "id": r.id, "service": r.service, "revision": r.revision, "state": state, "pid": r.pid,
            "port": r.port, "restarts": r.restarts, "last_exit_code": r.last_exit_code,
            "last_exit_reason": r.last_exit_reason, "restart_in_s": restart_in,
            "uptime_s": (now - replica.started_mono) if replica.started_mono and r.phase == "running" else None,
            "placement": r.placement,
        }
        if state in ("CrashLoopBackOff", "Exited"):
            entry["log_tail"] = log_tail(snapshot.log_path(r.id))
        replicas.append(entry)
    return {
        "app_dir": str(snapshot.app_dir), "pid": os.getpid(), "stopping": snapshot.stopping,
        "enforcement": snapshot.enforcement, "services": services, "replicas": replicas,
        "endpoints": {k: [e.to_dict() for e in v] for k, v in snapshot.endpoints.items()},
        "processes": {
            a.name: {"pid": a.handle.pid if a.handle else None, "last_exit_code": a.last_exit_code,
                     "crash_count": a.crash_count,
                     "state": "Running" if a.handle else ("BackOff" if backoff.in_crash_loop(a.crash_count)
                                                          else "Exited")}
            for a in snapshot.processes
        },
        "endpoints_version": snapshot.endpoints_version,
        "gateway": snapshot.gateway,
    }


def revision_counts(current: str, records: Sequence[Any]) -> list[dict[str, Any]]:
    """Replicas and ready (published) replicas per revision, the current one first, then older ones by
    their first replica: during a rollout, how many of the ready replicas already run the new code."""
    counts: dict[str, dict[str, Any]] = {current: {"revision": current, "current": True, "replicas": 0, "ready": 0}}
    for record in sorted(records, key=lambda r: r.created_index):
        entry = counts.setdefault(record.revision, {"revision": record.revision, "current": False,
                                                    "replicas": 0, "ready": 0})
        entry["replicas"] += 1
        entry["ready"] += 1 if record.published else 0
    return list(counts.values())


class StandingConditions:
    """The conditions of the latest plan (placement refused, crash loop, stalled rollout), remembered between
    passes so that each one is an event once, when it appears or its message changes."""

    def __init__(self) -> None:
        self._current: dict[tuple[str, str, str], Condition] = {}

    def update(self, conditions: Sequence[Condition]) -> list[Condition]:
        """Make ``conditions`` the standing ones; returns those that are new or changed."""
        current = {(c.service, c.kind, c.replica_id): c for c in conditions}
        changed = [c for key, c in current.items() if key not in self._current or self._current[key].message != c.message]
        self._current = current
        return changed

    def forget(self, replica_id: str) -> None:
        self._current = {key: c for key, c in self._current.items() if key[2] != replica_id}

    def of(self, service: str) -> list[dict[str, Any]]:
        """The standing conditions of ``service``, as status shows them."""
        return [{"kind": c.kind, "message": c.message, "replica": c.replica_id, "permanent": c.permanent}
                for key, c in sorted(self._current.items()) if key[0] == service]


def log_tail(path: Path) -> str:
    """The last lines of a process log, each cut to 400 characters (what status shows of a crash)."""
    tail = processes.log_tail(path, 8192).splitlines()[-LOG_TAIL_LINES:]
    return "\n".join(line[:400] for line in tail)
