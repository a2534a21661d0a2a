"""`lichen down` with no controller: stopping what a controller left, waiting through an injected clock."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from lichen.runtime.state import ReplicaRecord, StateStore
from lichen.runtime.teardown import stop_leftovers
from lichen.runtime.workspaces import Workspace
from lichen.testing import FakeClock


def test_a_recorded_replica_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True)
    assert child.stdout is not None and child.stdout.readline() == b"up\n"  # SIGTERM is ignored from here on
    try:
        import psutil

        store = StateStore(tmp_path / "state.db")
        store.save_replica(ReplicaRecord(id="web-a-0", service="web", revision="a", created_index=0, phase="running",
                                         pid=child.pid, create_time=psutil.Process(child.pid).create_time()))
        clock = FakeClock()
        pids = asyncio.run(stop_leftovers(Workspace(tmp_path), store, clock, grace_s=3.0))
        assert pids == [child.pid]
        assert child.wait(10) == -9  # SIGKILL once the 3 s grace (on the clock) was over
        assert clock.now() == 1003.0 and store.replicas() == []
        (stopped,) = store.events("web")
        assert stopped.kind == "Stopped" and stopped.at == clock.wall()
        store.close()
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
