"""Re-adoption after a controller restart: verify, adopt or clean up; never duplicate.

A controller killed with SIGKILL leaves its replicas running. The next one
reads their records from the state store and, for each, checks the pid, the
process start time and that the replica still answers on its port. A
replica that passes is adopted as it is (published again if it was, its
probes restarted); one that fails is killed and replaced by the normal
reconcile; one whose process is gone counts as a crash. Processes of this
app that no record knows (started just before the crash) are killed.

The functions here take what they need (the records, the process and port
seams, a clock) and return what they decided; the controller applies it.
:func:`await_answer` is the one wait for a live process to answer, for
replicas and the gateway alike.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, Protocol

from lichen.clocks import Clock
from lichen.control import backoff
from lichen.control.restarting import EventNote
from lichen.runtime import processes, teardown
from lichen.runtime.endpoints import Endpoint, EndpointRegistry
from lichen.runtime.processes import ProcessHandle, ProcessLauncher
from lichen.runtime.replicas import HOST, Replica
from lichen.runtime.state import ReplicaRecord, StateStore
from lichen.runtime.workspaces import Workspace
from lichen.spec.models import ServiceSpec

ANSWER_POLL_S = 0.1


class PortCheck(Protocol):
    async def port_answers(self, host: str, port: int, timeout_s: float) -> bool: ...


async def await_answer(answers: Callable[[], Awaitable[bool]], exited: Callable[[], bool], clock: Clock,
                       wait_s: float, every_s: float = ANSWER_POLL_S) -> bool:
    """Ask ``answers()`` until it says yes (True), the process exits or ``wait_s`` passes (False)."""
    deadline = clock.now() + wait_s
    while True:
        if await answers():
            return True
        if exited() or clock.now() > deadline:
            return False
        await clock.sleep(every_s)


@dataclass
class Adoption:
    """What adoption decided for one record (:func:`adopt_replicas`)."""

    replica: Replica
    outcome: Literal["adopted", "cleaned_up", "lost", "restored"]
    """adopted: alive and answering, ``replica.handle`` set; cleaned_up: alive but not answering (kill ``kill``);
    lost: gone while no controller ran (a crash); restored: not running when the controller died"""
    event: EventNote | None = None
    kill: ProcessHandle | None = None
    keep: bool = True
    """False: a stop that was finishing when the controller died; drop the record"""


async def adopt_replicas(records: Iterable[ReplicaRecord], launcher: ProcessLauncher, ports: PortCheck, clock: Clock,
                         wait_s: float, spec_of: Callable[[ReplicaRecord], ServiceSpec]) -> list[Adoption]:
    """Verify each recorded replica (pid, start time, answering on its port within ``wait_s``) and decide."""
    now, now_wall = clock.now(), clock.wall()
    decided = []
    for record in records:
        replica = Replica(record)
        if record.exited_at is not None:
            replica.exited_mono = now - max(0.0, now_wall - record.exited_at)
        if not record.pid or record.phase not in ("running", "terminating"):
            decided.append(Adoption(replica, "restored"))
            continue
        handle = launcher.adopt(record.pid, record.create_time or 0.0, record.id)
        answering = False
        if handle is not None and record.port:
            port, alive = record.port, handle
            answering = await await_answer(lambda: ports.port_answers(HOST, port, 0.5),
                                           lambda: launcher.poll(alive) is not None, clock, wait_s)
        if handle is not None and answering:
            replica.handle = handle
            replica.started_mono = now - max(0.0, now_wall - (record.started_at or now_wall))
            if record.published:
                replica.readiness = replace(replica.readiness, passing=True, answered=True, ever_passed=True)
            event = EventNote("Adopted", "pid, start time and port verified", f"pid {record.pid} port {record.port}")
            decided.append(Adoption(replica, "adopted", event))
            continue
        keep = not (record.stop_reason and not record.then_restart)
        if handle is not None:
            event = EventNote("CleanedUp", "not answering on its port", f"pid {record.pid}")
            record.phase, record.pid, record.create_time = "pending", None, None
            record.published = False
            decided.append(Adoption(replica, "cleaned_up", event, kill=handle, keep=keep))
            continue
        record.phase, record.pid, record.create_time = "exited", None, None
        record.last_exit_reason, record.last_exit_code = "Lost", None
        record.exited_at, replica.exited_mono = now_wall, now
        record.crash_count = backoff.next_crash_count(record.crash_count, 0.0, spec_of(record).restart)
        record.published = False
        decided.append(Adoption(replica, "lost", EventNote("Lost", "exited while no controller ran"), keep=keep))
    return decided


@dataclass(frozen=True)
class Orphan:
    """A replica process of this app that no record knows (started just before a crash)."""

    pid: int
    service: str
    replica: str


def find_orphans(app_dir: Path, known_pids: Iterable[int]) -> list[Orphan]:
    """The replica processes marked for ``app_dir`` that are not (in the process group of) a known pid."""
    known = set(known_pids)
    found = []
    for pid, env in teardown.marked_processes(app_dir):
        with contextlib.suppress(OSError):
            if pid in known or os.getpgid(pid) in known or "LICHEN_REPLICA" not in env:
                continue
        found.append(Orphan(pid, env.get("LICHEN_SERVICE", ""), env.get("LICHEN_REPLICA", "")))
    return found


class AdoptionHost(Protocol):
    """What :func:`adopt_into` needs of the controller (a :class:`~lichen.runtime.controlling.Controller`)."""

    @property
    def store(self) -> StateStore: ...
    @property
    def launcher(self) -> ProcessLauncher: ...
    @property
    def prober(self) -> PortCheck: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def adopt_wait_s(self) -> float: ...
    @property
    def workspace(self) -> Workspace: ...
    @property
    def replicas(self) -> dict[str, Replica]: ...
    @property
    def endpoints(self) -> EndpointRegistry: ...
    def spec_of(self, record: ReplicaRecord) -> ServiceSpec: ...
    def event(self, service: str, kind: str, reason: str = "", message: str = "", replica: str = "") -> None: ...
    def start_probing(self, replica: Replica) -> None: ...
    def child_pids(self) -> list[int]: ...


async def adopt_into(host: AdoptionHost) -> None:
    """Apply :func:`adopt_replicas` to a controller: keep, publish, probe or forget each replica, then kill the
    orphans (:func:`find_orphans`)."""
    now = host.clock.now()
    for found in await adopt_replicas(host.store.replicas(), host.launcher, host.prober, host.clock,
                                      host.adopt_wait_s, host.spec_of):
        replica, record = found.replica, found.replica.record
        if found.kill is not None:
            host.launcher.kill(found.kill)
        if found.event is not None:
            host.event(record.service, found.event.kind, found.event.reason, found.event.message, record.id)
        if not found.keep:
            host.store.delete_replica(record.id)
            continue
        host.replicas[record.id] = replica
        if found.outcome in ("cleaned_up", "lost"):
            host.store.save_replica(record)
        elif found.outcome == "adopted" and replica.handle is not None and record.port is not None:
            if record.published:
                host.endpoints.add(Endpoint(record.service, record.revision, record.id, HOST, record.port))
            if record.phase == "terminating":
                host.launcher.terminate(replica.handle)
                replica.kill_at = now + host.spec_of(record).termination_grace_s
            else:
                host.start_probing(replica)
    for orphan in find_orphans(host.workspace.app_dir, host.child_pids()):
        processes.signal_group(orphan.pid, signal.SIGKILL)
        host.event(orphan.service, "CleanedUp", "orphan without a record", f"pid {orphan.pid}", orphan.replica)
