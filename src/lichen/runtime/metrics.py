"""The controller's own metrics (names in docs/metrics.md), kept on the registry the control API serves at ``/metrics``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from lichen.control import backoff
from lichen.runtime.replicas import Replica


class ControllerMetrics:
    """``lichen_replicas``, ``lichen_replica_restarts_total``, ``lichen_replica_crashlooping`` and
    ``lichen_controller_loop_seconds`` on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.replicas = Gauge("lichen_replicas", "Replicas by state.", ["service", "revision", "state"],
                              registry=registry)
        self.restarts = Counter("lichen_replica_restarts_total", "Replica restarts.", ["service"], registry=registry)
        self.crashlooping = Gauge("lichen_replica_crashlooping", "1 while a replica is in CrashLoopBackOff.",
                                  ["service", "replica"], registry=registry)
        ProcessCollector(registry=registry)  # process_cpu_seconds_total: what the energy meter's own cost is
        # read against (lichen energy)
        self.loop = Histogram("lichen_controller_loop_seconds", "Duration of one controller pass.",
                              buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
                              registry=registry)

    def update(self, replicas: Iterable[Replica]) -> None:
        """Replica counts by service, revision and state, and each replica's crash-loop flag (after a pass)."""
        self.replicas.clear()
        counts: dict[tuple[str, str, str], int] = {}
        for replica in replicas:
            r = replica.record
            state = "ready" if r.published else r.phase
            counts[(r.service, r.revision, state)] = counts.get((r.service, r.revision, state), 0) + 1
            looping = r.phase == "exited" and backoff.in_crash_loop(r.crash_count)
            self.crashlooping.labels(r.service, r.id).set(1 if looping else 0)
        for labels, value in counts.items():
            self.replicas.labels(*labels).set(value)

    def forget(self, service: str, replica: str) -> None:
        """A replica that is gone: no crash-loop series of its own any more."""
        with contextlib.suppress(KeyError):
            self.crashlooping.remove(service, replica)
