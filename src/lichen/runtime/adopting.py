"""Re-adoption after a controller restart: verify, adopt or clean up; never duplicate.

A controller killed with SIGKILL leaves its replicas running. The next one
reads their records from the state store and, for each, checks the pid, the
process start time and that the replica still answers on its port. A
replica that passes is adopted as it is (published again if it was, its
probes restarted); one that fails is killed and replaced by the normal
reconcile; one whose process is gone counts as a crash. Processes of this
app that no record knows (started just before the crash) are killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from lichen.control import backoff
from lichen.runtime import processes, teardown
from lichen.runtime.endpoints import Endpoint
from lichen.runtime.replicas import HOST, Replica

if TYPE_CHECKING:
    from lichen.runtime.controlling import Controller


async def adopt(controller: Controller) -> None:
    """Re-adopt replicas an earlier controller left running, or clean them up; never duplicate."""
    now = controller.clock.now()
    now_wall = controller.clock.wall()
    for record in controller.store.replicas():
        replica = Replica(record)
        if record.exited_at is not None:
            replica.exited_mono = now - max(0.0, now_wall - record.exited_at)
        if record.pid and record.phase in ("running", "terminating"):
            handle = controller.launcher.adopt(record.pid, record.create_time or 0.0, record.id)
            answering = False
            if handle is not None and record.port:
                deadline = time.monotonic() + controller.adopt_wait_s
                while True:
                    if await controller.prober.port_answers(HOST, record.port, 0.5):
                        answering = True
                        break
                    if controller.launcher.poll(handle) is not None or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.1)
            if handle is not None and answering:
                replica.handle = handle
                replica.started_mono = now - max(0.0, now_wall - (record.started_at or now_wall))
                if record.published:
                    replica.readiness = replace(replica.readiness, passing=True, answered=True, ever_passed=True)
                    controller.endpoints.add(Endpoint(record.service, record.revision, record.id, HOST, record.port))
                controller.replicas[record.id] = replica
                controller.event(record.service, "Adopted", "pid, start time and port verified",
                           f"pid {record.pid} port {record.port}", record.id)
                if record.phase == "terminating":
                    controller.launcher.terminate(handle)
                    replica.kill_at = now + controller._spec_of(record).termination_grace_s
                else:
                    controller._start_probing(replica)
                continue
            if handle is not None:
                controller.launcher.kill(handle)
                controller.event(record.service, "CleanedUp", "not answering on its port", f"pid {record.pid}", record.id)
                record.phase, record.pid, record.create_time = "pending", None, None
            else:
                record.phase, record.pid, record.create_time = "exited", None, None
                record.last_exit_reason, record.last_exit_code = "Lost", None
                record.exited_at = now_wall
                replica.exited_mono = now
                record.crash_count = backoff.next_crash_count(record.crash_count, 0.0, controller._spec_of(record).restart)
                controller.event(record.service, "Lost", "exited while no controller ran", "", record.id)
            record.published = False
            if record.stop_reason and not record.then_restart:
                controller.store.delete_replica(record.id)
                continue
            controller.store.save_replica(record)
        controller.replicas[record.id] = replica
    controller.clean_orphans()

def clean_orphans(controller: Controller) -> int:
    """Kill replica processes of this app that no record knows (started just before a crash)."""
    known = {r.record.pid for r in controller.replicas.values() if r.record.pid}
    killed = 0
    for pid, env in teardown.marked_processes(controller.workspace.app_dir):
        with contextlib.suppress(OSError):
            if pid in known or os.getpgid(pid) in known or "LICHEN_REPLICA" not in env:
                continue
        processes.signal_group(pid, signal.SIGKILL)
        controller.event(env.get("LICHEN_SERVICE", ""), "CleanedUp", "orphan without a record", f"pid {pid}",
                   env.get("LICHEN_REPLICA", ""))
        killed += 1
    return killed

