"""Which replica logs to keep: the rotation rule the controller applies to ``.lichen/logs`` (pure).

The rule, per service: the log of every replica that still has a record
(running, starting, terminating, in backoff) is kept, and so are the logs of
the :data:`DEAD_LOGS_KEPT` replicas that stopped most recently (newest last
write first); older logs of stopped replicas are removed, with their rotated
copies (``.log.1`` ...). ``lichen logs --all`` shows what is kept.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

DEAD_LOGS_KEPT = 5
"""logs of stopped replicas kept per service (kubectl keeps one: ``--previous``)"""


@dataclass(frozen=True)
class ReplicaLog:
    replica: str
    service: str
    modified_s: float
    """wall-clock time of the last write"""


def logs_to_remove(logs: Iterable[ReplicaLog], live: Iterable[str], keep_dead: int = DEAD_LOGS_KEPT) -> list[str]:
    """The replicas whose logs go: per service, all but the ``keep_dead`` most recently written logs of
    replicas not in ``live``; ties go by replica id, so the rule is deterministic."""
    alive = set(live)
    dead: dict[str, list[ReplicaLog]] = {}
    for log in logs:
        if log.replica not in alive:
            dead.setdefault(log.service, []).append(log)
    removed = []
    for service_logs in dead.values():
        service_logs.sort(key=lambda log: (log.modified_s, log.replica), reverse=True)
        removed += [log.replica for log in service_logs[max(0, keep_dead):]]
    return sorted(removed)
