"""Start and stop order between services (``services.<name>.depends_on``), decided on plain data.

Docker Compose's ``depends_on: {condition: service_healthy}``, level-based:

* **start**: a service may create replicas (its first start, a scale-up, the
  new replicas of a rolling update) only while every service it depends on
  has at least its desired number of replicas ready (running, passing
  readiness and liveness; any revision counts, so a dependency in the middle
  of its own rollout stays "ready"). A dependency with 0 desired replicas is
  ready. :func:`waiting_on` names what each held service waits for;
* **after the start** nothing is ordered: replicas already created keep
  running, restart after a crash and are killed on failed liveness as usual,
  whatever their dependencies do (as in Compose, which acts only on ``up``).
  A service that must not serve while a dependency is down says so in its
  own ``/readyz``;
* **stop** (``lichen down``): a service's replicas are stopped only once no
  service depending on it has a replica left, so dependents drain first
  (:func:`stop_waiting_on`).

Validation (:mod:`lichen.spec.checking`) refuses unknown names and cycles, so
the graph here is a DAG; a name missing at run time counts as not ready.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from lichen.control.plans import DesiredService, DesiredState, ReplicaView


def _serving(replica: ReplicaView) -> bool:
    # the same test as reconciling.serving (which imports this module)
    return replica.phase == "running" and replica.ready and replica.live


def ready_counts(observed: Sequence[ReplicaView]) -> Counter[str]:
    """Ready replicas per service, of any revision."""
    return Counter(r.service for r in observed if _serving(r))


def waiting_on(desired: DesiredState, observed: Sequence[ReplicaView]) -> dict[str, str]:
    """The services that may not create replicas now, each with what it waits for.

    ``{"feedback": "waiting for sentiment (0/1 ready)"}``; a service absent
    from the result may start.
    """
    ready = ready_counts(observed)
    held: dict[str, str] = {}
    for name, service in desired.services.items():
        missing = [_shortfall(dep, desired.services.get(dep), ready[dep]) for dep in service.spec.depends_on]
        missing = [m for m in missing if m]
        if missing:
            held[name] = "waiting for " + ", ".join(missing)
    return held


def _shortfall(dep: str, service: DesiredService | None, ready: int) -> str:
    if service is None:
        return f"{dep} (not in lichen.yaml)"
    if ready < service.replicas:
        return f"{dep} ({ready}/{service.replicas} ready)"
    return ""


def dependents(services: Mapping[str, DesiredService]) -> dict[str, list[str]]:
    """For each service, the services that depend on it directly (sorted)."""
    found: dict[str, list[str]] = {name: [] for name in services}
    for name, service in services.items():
        for dep in service.spec.depends_on:
            found.setdefault(dep, []).append(name)
    return {name: sorted(users) for name, users in found.items()}


def stop_waiting_on(desired: DesiredState, observed: Sequence[ReplicaView]) -> dict[str, str]:
    """While ``lichen down`` drains: the services whose replicas must not be stopped yet, each with why.

    A service waits while any service that depends on it still has a replica
    (in any phase, terminating included), so the stop runs in reverse start
    order: ``{"sentiment": "stops after feedback"}``.
    """
    present = {r.service for r in observed}
    held: dict[str, str] = {}
    for name, users in dependents(desired.services).items():
        left = [u for u in users if u in present]
        if left and name in present:
            held[name] = "stops after " + ", ".join(left)
    return held

