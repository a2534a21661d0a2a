"""Which process ``lichen chaos``'s ``pause_dependency`` may stop: the one listening on a TCP port, if it is fair game.

A dependency (Redis for a cache) is a process Lichen does not run. The run
finds what listens on the fault's port (:mod:`lichen.trials.chaos_dependencies`)
and this decides, from plain data, whether to ``SIGSTOP`` it: never when
nothing listens, never one of Lichen's own processes (the faults built for
those are ``pause_replica``, ``kill_gateway`` and ``kill_controller``),
never another user's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Listener:
    """A process with a listening socket on the port; ``pid`` None when the socket's owner cannot be seen (another
    user's process, as ``psutil.net_connections`` reports it)."""

    pid: int | None
    name: str = ""
    uid: int | None = None
    lichen: bool = False
    """Lichen's own: the controller, the gateway, a replica or job it started, or the chaos run itself"""


class Refused(ValueError):
    """The dependency on that port must not be paused; the message says why."""


def dependency_pids(port: int, listeners: Sequence[Listener], my_uid: int) -> list[int]:
    """The processes to stop for a dependency on ``port``, or :class:`Refused` saying why not."""
    if not listeners:
        raise Refused(f"no process listens on TCP port {port} on this machine; start the dependency first")
    if any(listener.pid is None for listener in listeners):
        raise Refused(f"a process of another user listens on TCP port {port}: lichen chaos can neither see it nor "
                      "stop it")
    for listener in listeners:
        if listener.lichen:
            raise Refused(f"TCP port {port} belongs to {listener.name} (pid {listener.pid}), one of Lichen's own "
                          "processes; pause_replica, kill_gateway and kill_controller are the faults for those")
        if listener.uid != my_uid:
            raise Refused(f"TCP port {port} belongs to {listener.name} (pid {listener.pid}) of user id "
                          f"{listener.uid}, not the current user ({my_uid}); lichen chaos stops only your own "
                          "processes")
    return sorted({listener.pid for listener in listeners if listener.pid is not None})


def describe(port: int, listeners: Sequence[Listener]) -> str:
    """How the report names the target: ``redis-server:6379``."""
    names = sorted({listener.name for listener in listeners if listener.name}) or ["?"]
    return f"{'+'.join(names)}:{port}"
