"""Finding the process that listens on a TCP port, for ``lichen chaos``'s ``pause_dependency`` (whether it may be
stopped: :mod:`lichen.control.dependency_faults`)."""

from __future__ import annotations

import os
from pathlib import Path

import psutil

from lichen.control.dependency_faults import Listener, Refused, dependency_pids
from lichen.runtime.workspaces import read_controller_info, workspace_for

LICHEN_ENV = ("LICHEN_CONTROLLER", "LICHEN_REPLICA")


def _is_lichen(process: psutil.Process, own: set[int]) -> bool:
    if process.pid in own:
        return True
    try:
        if any(name in process.environ() for name in LICHEN_ENV):
            return True
        argv = process.cmdline()
    except (psutil.Error, OSError):
        return False
    return "lichen.cli.main" in " ".join(argv) or any(Path(arg).name == "lichen" for arg in argv[:2])


def listeners_on(port: int, app_dir: Path) -> list[Listener]:
    """The processes with a TCP socket listening on ``port`` (any address), each marked when it is Lichen's own:
    this app's controller, a process a controller started (its environment says so), any ``lichen`` command, or
    this one."""
    own = {os.getpid(), int((read_controller_info(workspace_for(app_dir)) or {}).get("pid", 0) or 0)}
    found: dict[int | None, Listener] = {}
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status != psutil.CONN_LISTEN or not conn.laddr or conn.laddr.port != port:
            continue
        if conn.pid is None:
            found[None] = Listener(None)
            continue
        try:
            process = psutil.Process(conn.pid)
            found[conn.pid] = Listener(conn.pid, process.name(), process.uids().real, _is_lichen(process, own))
        except psutil.NoSuchProcess:
            continue
        except (psutil.AccessDenied, OSError):
            found[conn.pid] = Listener(conn.pid, "?", None)
    return list(found.values())


def dependency_problem(port: int, app_dir: Path) -> str | None:
    """What stops ``pause_dependency`` on ``port`` now (None: it can run): the experiment checker's question."""
    try:
        dependency_pids(port, listeners_on(port, app_dir), os.getuid())
    except Refused as exc:
        return str(exc)
    return None
