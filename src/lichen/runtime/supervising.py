"""Supervising processes that are not replicas (the gateway, for example).

The controller owns a list of :class:`AuxiliaryProcess`; each pass,
:func:`step_auxiliary` starts the missing ones, restarts exited ones on the
CrashLoopBackOff schedule (:mod:`lichen.control.backoff`) and, while the
controller shuts down, sends SIGTERM and then SIGKILL after the grace period.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field

from lichen.control import backoff
from lichen.runtime.processes import LaunchRequest, ProcessHandle, ProcessLauncher
from lichen.runtime.workspaces import Workspace
from lichen.spec.models import RestartSpec

EventSink = Callable[..., None]


@dataclass
class AuxiliaryProcess:
    """A non-replica process the controller keeps running (the gateway, for example)."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    restart: RestartSpec = field(default_factory=RestartSpec)
    grace_s: float = 10.0
    handle: ProcessHandle | None = None
    crash_count: int = 0
    started_mono: float | None = None
    exited_mono: float | None = None
    kill_at: float | None = None
    last_exit_code: int | None = None


def step_auxiliary(auxiliary: Iterable[AuxiliaryProcess], launcher: ProcessLauncher, workspace: Workspace,
                   now: float, stopping: bool, event: EventSink, hidden_env: Collection[str] = ()) -> float | None:
    """One supervision pass; returns when the next restart is due, if any.

    A started process inherits the controller's environment minus ``hidden_env``
    (the app's secret names), plus its own ``env``.
    """
    wake: float | None = None
    for aux in auxiliary:
        if aux.handle is not None:
            code = launcher.poll(aux.handle)
            if code is None:
                if stopping and aux.kill_at is None:
                    launcher.terminate(aux.handle)
                    aux.kill_at = now + aux.grace_s
                elif aux.kill_at is not None and now >= aux.kill_at:
                    launcher.kill(aux.handle)
                continue
            ran_for = now - (aux.started_mono or now)
            aux.handle, aux.exited_mono, aux.last_exit_code, aux.kill_at = None, now, code, None
            if stopping:
                event(aux.name, "Stopped", "shutdown", f"exit code {code}")
                continue
            aux.crash_count = backoff.next_crash_count(aux.crash_count, ran_for, aux.restart)
            event(aux.name, "Exited", "Error" if code else "Completed",
                       f"exit code {code}; restart in {backoff.restart_delay_s(aux.crash_count, aux.restart):g}s")
        if stopping:
            continue
        due = backoff.restart_at(aux.exited_mono, aux.crash_count, aux.restart) if aux.exited_mono is not None else now
        if due > now:
            wake = due if wake is None else min(wake, due)
            continue
        request = LaunchRequest(name=aux.name, argv=aux.argv, env={**{k: v for k, v in os.environ.items() if k not in hidden_env}, **aux.env},
                                cwd=workspace.app_dir, log_path=workspace.log_path(aux.name))
        try:
            aux.handle = launcher.launch(request)
        except OSError as exc:
            aux.exited_mono = now
            aux.crash_count = backoff.next_crash_count(aux.crash_count, 0.0, aux.restart)
            event(aux.name, "StartFailed", type(exc).__name__, str(exc))
            continue
        aux.started_mono = now
        event(aux.name, "Started", "supervised process", f"pid {aux.handle.pid}")
    return wake
