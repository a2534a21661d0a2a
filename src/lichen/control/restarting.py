"""What an exit means and when a process starts again, as pure functions returning decisions.

Beside :mod:`lichen.control.backoff` (the CrashLoopBackOff schedule) and
:mod:`lichen.control.reconciling` (which replicas to start and stop). The
runtime polls its processes, hands what it saw to these functions and
applies what they return:

* :func:`replica_exit` reads a replica's exit: a planned stop (the replica
  is forgotten) or a crash, with its reason (``OOMKilled``, ``Error``,
  ``Killed``, ...), the new crash count and the delay before the restart;
* :func:`supervise` decides one pass for a supervised process that is not a
  replica (the gateway): leave it, SIGTERM it on shutdown, SIGKILL it when
  its grace period is over, record its exit, start it once its backoff is
  over, or say when to look again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from lichen.control import backoff
from lichen.spec.models import RestartSpec

UNKNOWN_EXIT = -255
"""The exit code the process seam reports for an adopted process (not our child: its status is unknown)."""


def exit_text(code: int) -> str:
    """``exit code 3``, ``signal 9`` or ``unknown (adopted)``."""
    if code == UNKNOWN_EXIT:
        return "unknown (adopted)"
    return f"signal {-code}" if code < 0 else f"exit code {code}"


@dataclass(frozen=True)
class EventNote:
    """An event to record: kind, reason and message (the runtime adds the time, service and replica)."""

    kind: str
    reason: str = ""
    message: str = ""


# ---------------------------------------------------------------- replicas


@dataclass(frozen=True)
class ReplicaExit:
    """What one replica exit means (:func:`replica_exit`)."""

    planned: bool
    """a stop the controller asked for, with no restart: forget the replica"""
    reason: str
    exit_code: int | None
    """None when unknown (an adopted process)"""
    crash_count: int
    restart_delay_s: float
    event: EventNote


def replica_exit(code: int, *, oom: bool, stop_reason: str, then_restart: bool, ran_for_s: float, crash_count: int,
                 restart: RestartSpec) -> ReplicaExit:
    """Read a replica's exit (``code`` as the process seam reports it) into a decision."""
    text = exit_text(code)
    known = None if code == UNKNOWN_EXIT else code
    if stop_reason and not then_restart:
        return ReplicaExit(True, stop_reason, known, crash_count, 0.0, EventNote("Stopped", stop_reason, text))
    if oom:
        reason = "OOMKilled"
    elif then_restart:
        reason = stop_reason or "LivenessFailed"
    elif code == 0:
        reason = "Completed"
    elif code < 0 and code != UNKNOWN_EXIT:
        reason = "Killed"
    else:
        reason = "Error"
    crashes = backoff.next_crash_count(crash_count, ran_for_s, restart)
    delay = backoff.restart_delay_s(crashes, restart)
    event = EventNote("OOMKilled" if oom else "Exited", reason, f"{text} after {ran_for_s:.1f}s; restart in {delay:g}s")
    return ReplicaExit(False, reason, known, crashes, delay, event)


# ---------------------------------------------------------------- supervised processes (the gateway)


@dataclass(frozen=True)
class SupervisedState:
    """What the supervisor remembers of one process between passes (plain data, monotonic seconds)."""

    crash_count: int = 0
    started_at: float | None = None
    exited_at: float | None = None
    kill_at: float | None = None
    last_exit_code: int | None = None


@dataclass(frozen=True)
class SupervisionStep:
    """One pass of :func:`supervise`: the state after it and what the runtime must do."""

    state: SupervisedState
    signal: Literal["SIGTERM", "SIGKILL"] | None = None
    start: bool = False
    events: tuple[EventNote, ...] = ()
    wake_at: float | None = None
    """when the next start is due, if later than now"""


def supervise(state: SupervisedState, *, running: bool, exit_code: int | None, now: float, stopping: bool,
              restart: RestartSpec, grace_s: float) -> SupervisionStep:
    """Decide one pass for a supervised process.

    ``running``: the runtime holds a live handle; ``exit_code``: what polling
    it returned this pass (None while it runs). On shutdown a running process
    gets SIGTERM, then SIGKILL at ``kill_at``; otherwise an exit counts as a
    crash and the process starts again on the CrashLoopBackOff schedule (the
    first restart at once).
    """
    events: list[EventNote] = []
    if running:
        if exit_code is None:
            if stopping and state.kill_at is None:
                return SupervisionStep(replace(state, kill_at=now + grace_s), signal="SIGTERM")
            if state.kill_at is not None and now >= state.kill_at:
                return SupervisionStep(state, signal="SIGKILL")
            return SupervisionStep(state)
        ran_for_s = now - (state.started_at if state.started_at is not None else now)
        state = replace(state, exited_at=now, last_exit_code=exit_code, kill_at=None)
        if stopping:
            return SupervisionStep(state, events=(EventNote("Stopped", "shutdown", f"exit code {exit_code}"),))
        state = replace(state, crash_count=backoff.next_crash_count(state.crash_count, ran_for_s, restart))
        delay = backoff.restart_delay_s(state.crash_count, restart)
        events.append(EventNote("Exited", "Error" if exit_code else "Completed",
                                f"exit code {exit_code}; restart in {delay:g}s"))
    if stopping:
        return SupervisionStep(state, events=tuple(events))
    due = now if state.exited_at is None else backoff.restart_at(state.exited_at, state.crash_count, restart)
    if due > now:
        return SupervisionStep(state, events=tuple(events), wake_at=due)
    return SupervisionStep(state, start=True, events=tuple(events))


def started(state: SupervisedState, now: float) -> SupervisedState:
    """The state once the process started."""
    return replace(state, started_at=now)


def start_failed(state: SupervisedState, now: float, restart: RestartSpec) -> SupervisedState:
    """The state after a start that failed (``OSError`` from the launch): a crash that ran for no time."""
    return replace(state, exited_at=now, crash_count=backoff.next_crash_count(state.crash_count, 0.0, restart))
