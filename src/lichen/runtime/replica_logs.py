"""Replica log files: which belong to a service, merging them by time, and applying the rotation rule.

A replica writes ``.lichen/logs/<replica>.log`` (``<service>-<revision[:5]>-<n>``);
:func:`prune_replica_logs` removes the logs that :func:`lichen.control.log_retention.logs_to_remove`
lets go (the controller calls it with its periodic log rotation), and
:func:`merge_by_time` is how ``lichen logs`` interleaves several replicas.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path

from lichen.control.log_retention import DEAD_LOGS_KEPT, ReplicaLog, logs_to_remove
from lichen.logs import get_logger
from lichen.runtime.workspaces import Workspace

log = get_logger("lichen.controller")


def is_replica_of(replica: str, service: str) -> bool:
    """Whether ``replica`` names a replica of ``service`` (``api-3f2a1-0`` is, ``api-v2-3f2a1-0`` is not)."""
    return re.fullmatch(re.escape(service) + r"-[0-9a-f]{5}-\d+", replica) is not None


def replica_logs_on_disk(workspace: Workspace, service: str) -> dict[str, Path]:
    """The current log file of each replica of ``service`` that has one, by replica id."""
    found = {}
    for path in workspace.logs.glob(f"{glob_escape(service)}-*.log"):
        replica = path.name[: -len(".log")]
        if is_replica_of(replica, service):
            found[replica] = path
    return found


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def prune_replica_logs(workspace: Workspace, services: Iterable[str], live: Iterable[str],
                       keep_dead: int = DEAD_LOGS_KEPT) -> list[str]:
    """Remove the logs (and rotated copies) of stopped replicas beyond the newest ``keep_dead`` per service;
    returns the replicas whose logs went."""
    candidates = []
    for service in services:
        for replica, path in replica_logs_on_disk(workspace, service).items():
            try:
                candidates.append(ReplicaLog(replica, service, path.stat().st_mtime))
            except OSError:
                continue
    removed = logs_to_remove(candidates, live, keep_dead)
    for replica in removed:
        path = workspace.log_path(replica)
        for old in [path, *path.parent.glob(glob_escape(path.name) + ".*")]:
            old.unlink(missing_ok=True)
    if removed:
        log.info("replica_logs_removed", replicas=removed, kept_per_service=keep_dead)
    return removed


def line_time(line: str) -> float | None:
    """The epoch seconds of a JSON log line's ``ts`` field (``2026-11-26T18:49:05.149Z``), else None."""
    start = line.find('"ts":"')
    if start < 0 or not line.lstrip().startswith("{"):
        return None
    end = line.find('"', start + 6)
    try:
        return datetime.fromisoformat(line[start + 6:end].replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _keyed(replica: str, text: str) -> Iterator[tuple[float, str, str]]:
    last = float("-inf")
    for line in text.splitlines():
        when = line_time(line)
        last = last if when is None else max(last, when)  # a plain line (or an earlier ts) keeps its place
        yield last, replica, line


def merge_by_time(chunks: Mapping[str, str]) -> list[tuple[str, str]]:
    """The lines of several replicas' logs as ``(replica, line)``, merged by their ``ts``; lines without one
    (a traceback, a ``print``) and lines out of order stay where they are within their own file."""
    merged = heapq.merge(*(_keyed(replica, text) for replica, text in sorted(chunks.items())),
                         key=lambda item: item[0])
    return [(replica, line) for _, replica, line in merged]
