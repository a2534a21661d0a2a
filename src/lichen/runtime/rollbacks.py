"""Rolling updates that give up: back to the previous revision when the new one crash-loops or stalls.

The reconciler says when a rolling update should give up
(:func:`lichen.control.rolling.give_up_reason`, with ``rollout.auto_rollback``);
:func:`roll_back` points the service at the revision it ran before the update
(its spec comes from the state store), so the same rolling path brings the old
replicas back and drains the new ones. A ``RolloutRolledBack`` event says why.
A rollback is not itself rolled back: the previous revision is forgotten once
used. The next ``lichen up`` of the same spec tries the new revision again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from lichen.runtime.replicas import ServiceState
from lichen.spec.models import ServiceSpec


class RollbackHost(Protocol):
    """What :func:`roll_back` needs of the controller (a :class:`~lichen.runtime.controlling.Controller`)."""

    @property
    def services(self) -> Mapping[str, ServiceState]: ...
    def revision_spec(self, service: str, revision: str) -> ServiceSpec | None: ...
    def event(self, service: str, kind: str, reason: str = "", message: str = "", replica: str = "") -> None: ...
    def save_desired(self, name: str) -> None: ...
    def wake(self) -> None: ...


def roll_back(host: RollbackHost, name: str, reason: str) -> bool:
    """Go back to the service's previous revision; False when there is none to go back to."""
    state = host.services.get(name)
    if state is None or not state.previous_revision or state.previous_revision == state.revision:
        return False
    previous = state.previous_revision
    spec = host.revision_spec(name, previous)
    if spec is None:
        return False
    host.event(name, "RolloutRolledBack", reason, f"{state.revision} -> {previous}: {reason}")
    state.spec, state.revision, state.rollout, state.previous_revision = spec, previous, None, ""
    host.save_desired(name)
    host.wake()
    return True
