"""``lichen status`` as plain data: services, replicas (with CrashLoopBackOff and log tails), endpoints."""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from lichen.control import backoff
from lichen.runtime import processes

if TYPE_CHECKING:
    from lichen.runtime.controlling import Controller


def controller_status(self: Controller) -> dict[str, Any]:
    """Everything ``lichen status`` shows, as plain data."""
    now = self.clock.now()
    services = {}
    for name, s in self.services.items():
        services[name] = {
            "revision": s.revision, "desired": s.replicas,
            "ready": sum(1 for r in self.replicas.values() if r.record.service == name and r.record.published),
            "rollout": asdict(s.rollout) if s.rollout else None,
            "conditions": self.conditions(name),
        }
    replicas = []
    for replica in sorted(self.replicas.values(), key=lambda r: (r.record.service, r.record.created_index)):
        r = replica.record
        spec = self._spec_of(r)
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
            tail = processes.log_tail(self.workspace.log_path(r.id), 8192).splitlines()[-15:]
            entry["log_tail"] = "\n".join(line[:400] for line in tail)
        replicas.append(entry)
    return {
        "app_dir": str(self.workspace.app_dir), "pid": os.getpid(), "stopping": self.stopping,
        "enforcement": self.launcher.enforcement, "services": services, "replicas": replicas,
        "endpoints": {k: [e.to_dict() for e in v] for k, v in self.endpoints.by_service().items()},
        "processes": {
            a.name: {"pid": a.handle.pid if a.handle else None, "last_exit_code": a.last_exit_code,
                     "crash_count": a.crash_count,
                     "state": "Running" if a.handle else ("BackOff" if backoff.in_crash_loop(a.crash_count)
                                                          else "Exited")}
            for a in self.auxiliary.values()
        },
        "endpoints_version": self.endpoints.version,
        "gateway": self.gateway.status() if self.gateway is not None else None,
    }
