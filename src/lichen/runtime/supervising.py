"""Supervising processes that are not replicas (the gateway, for example).

The controller owns a list of :class:`AuxiliaryProcess`; each pass,
:func:`step_auxiliary` polls each one, asks the pure
:func:`lichen.control.restarting.supervise` what to do (start a missing one,
restart an exited one on the CrashLoopBackOff schedule, SIGTERM on shutdown
and SIGKILL after the grace period) and does it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field

from lichen.control import restarting
from lichen.control.restarting import SupervisedState
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

    @property
    def state(self) -> SupervisedState:
        """What the supervision decisions read (plain data)."""
        return SupervisedState(self.crash_count, self.started_mono, self.exited_mono, self.kill_at, self.last_exit_code)

    @state.setter
    def state(self, state: SupervisedState) -> None:
        self.crash_count, self.started_mono, self.exited_mono = state.crash_count, state.started_at, state.exited_at
        self.kill_at, self.last_exit_code = state.kill_at, state.last_exit_code


def step_auxiliary(auxiliary: Iterable[AuxiliaryProcess], launcher: ProcessLauncher, workspace: Workspace,
                   now: float, stopping: bool, event: EventSink, hidden_env: Collection[str] = ()) -> float | None:
    """One supervision pass; returns when the next restart is due, if any.

    A started process inherits the controller's environment minus ``hidden_env``
    (the app's secret names), plus its own ``env``.
    """
    wake: float | None = None
    for aux in auxiliary:
        code = launcher.poll(aux.handle) if aux.handle is not None else None
        step = restarting.supervise(aux.state, running=aux.handle is not None, exit_code=code, now=now,
                                    stopping=stopping, restart=aux.restart, grace_s=aux.grace_s)
        aux.state = step.state
        if aux.handle is not None:
            if step.signal == "SIGTERM":
                launcher.terminate(aux.handle)
            elif step.signal == "SIGKILL":
                launcher.kill(aux.handle)
            if code is not None:
                aux.handle = None
        for note in step.events:
            event(aux.name, note.kind, note.reason, note.message)
        if step.wake_at is not None:
            wake = step.wake_at if wake is None else min(wake, step.wake_at)
        if step.start:
            env = {**{k: v for k, v in os.environ.items() if k not in hidden_env}, **aux.env}
            request = LaunchRequest(name=aux.name, argv=aux.argv, env=env, cwd=workspace.app_dir,
                                    log_path=workspace.log_path(aux.name))
            try:
                aux.handle = launcher.launch(request)
            except OSError as exc:
                aux.state = restarting.start_failed(aux.state, now, aux.restart)
                event(aux.name, "StartFailed", type(exc).__name__, str(exc))
                continue
            aux.state = restarting.started(aux.state, now)
            event(aux.name, "Started", "supervised process", f"pid {aux.handle.pid}")
    return wake
