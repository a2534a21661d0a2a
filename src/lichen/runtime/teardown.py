"""Stopping what a controller left behind, and finding processes that belong to an app.

Every replica's environment carries ``LICHEN_CONTROLLER=<app dir>``, so a
process that was started just before a controller crash (and never made it
into the state store) can still be found and stopped: nothing is orphaned.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import psutil

from lichen.clocks import Clock
from lichen.runtime import processes
from lichen.runtime.state import StateStore
from lichen.runtime.workspaces import Workspace


def marked_processes(app_dir: Path) -> list[tuple[int, dict[str, str]]]:
    """(pid, environment) of every live process whose environment names ``app_dir`` as its controller."""
    marker = str(app_dir)
    found = []
    for process in psutil.process_iter(["pid"]):
        if process.pid == os.getpid():
            continue
        with contextlib.suppress(psutil.Error, OSError):
            env = process.environ()
            if env.get("LICHEN_CONTROLLER") == marker and process.status() != psutil.STATUS_ZOMBIE:
                found.append((process.pid, env))
    return found


async def stop_leftovers(workspace: Workspace, store: StateStore, clock: Clock, grace_s: float = 10.0,
                         every_s: float = 0.05) -> list[int]:
    """With no controller running: stop every replica process recorded (or marked) for this app.

    Processes are matched by pid *and* start time, plus any process whose
    environment names this app as its controller; each gets SIGTERM, then
    SIGKILL after ``grace_s`` (waited on ``clock``, checking every ``every_s``).
    Returns the pids that were signalled.
    """
    targets: dict[int, float | None] = {}
    for record in store.replicas():
        if record.pid and processes.is_alive(record.pid, record.create_time):
            targets[record.pid] = record.create_time
    for pid, _env in marked_processes(workspace.app_dir):
        targets.setdefault(pid, processes.process_create_time(pid))
    for pid in targets:
        processes.signal_group(pid, signal.SIGTERM)
    deadline = clock.now() + grace_s
    while clock.now() < deadline and any(processes.is_alive(p, c) for p, c in targets.items()):
        await clock.sleep(min(every_s, deadline - clock.now()))
    for pid, create_time in targets.items():
        if processes.is_alive(pid, create_time) or processes.group_alive(pid):
            processes.signal_group(pid, signal.SIGKILL)
    for record in store.replicas():
        store.delete_replica(record.id)
        store.add_event(clock.wall(), record.service, "Stopped", "lichen down (no controller)", "", record.id)
    return sorted(targets)
