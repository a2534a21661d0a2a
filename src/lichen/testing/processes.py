"""In-memory twins of the process and probe seams of :mod:`lichen.runtime`.

``FakeLauncher`` "starts" processes that live until a test ends them
(``exit(pid, code)``) or the controller signals them; when one ends, this
process gets SIGCHLD, as from the kernel when a real child exits (so the
controller notices at once, through its own signal handler). ``FakeProber``
answers probes from a table the test edits. With both, a
:class:`lichen.runtime.controlling.Controller` runs its real loop with no
subprocess and no socket.
"""

from __future__ import annotations

import itertools
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

from lichen.control.probing import Outcome
from lichen.runtime.processes import LaunchRequest, ProcessHandle


@dataclass
class FakeProcess:
    pid: int
    request: LaunchRequest
    returncode: int | None = None
    ignores_sigterm: bool = False
    oom: bool = False
    signals: list[str] = field(default_factory=list)


class FakeLauncher:
    use_cgroups = False
    enforcement = "fake"

    def __init__(self, sigchld: bool = True) -> None:
        self.sigchld = sigchld
        """send this process SIGCHLD when a fake process ends (False: the test wakes the controller itself)"""
        self._pids = itertools.count(50_000)
        self.processes: dict[int, FakeProcess] = {}
        self.fail_next_launch: OSError | None = None

    # ------------------------------------------------------------ test API
    def alive(self) -> list[FakeProcess]:
        return [p for p in self.processes.values() if p.returncode is None]

    def by_replica(self, replica: str) -> list[FakeProcess]:
        return [p for p in self.processes.values() if p.request.name == replica]

    def exit(self, pid: int, code: int, oom: bool = False) -> None:
        process = self.processes[pid]
        process.oom = oom
        self._ended(process, code)

    def _ended(self, process: FakeProcess, code: int) -> None:
        if process.returncode is None:
            process.returncode = code
            if self.sigchld:
                os.kill(os.getpid(), signal.SIGCHLD)

    # ------------------------------------------------------------ the seam
    def launch(self, request: LaunchRequest) -> ProcessHandle:
        if self.fail_next_launch is not None:
            error, self.fail_next_launch = self.fail_next_launch, None
            raise error
        pid = next(self._pids)
        self.processes[pid] = FakeProcess(pid, request)
        return ProcessHandle(pid=pid, create_time=float(pid))

    def adopt(self, pid: int, create_time: float, name: str) -> ProcessHandle | None:
        process = self.processes.get(pid)
        if process is None or process.returncode is not None or float(pid) != create_time:
            return None
        return ProcessHandle(pid=pid, create_time=create_time)

    def poll(self, handle: ProcessHandle) -> int | None:
        process = self.processes.get(handle.pid)
        return -255 if process is None else process.returncode

    def terminate(self, handle: ProcessHandle) -> None:
        process = self.processes[handle.pid]
        process.signals.append("SIGTERM")
        if not process.ignores_sigterm:
            self._ended(process, 0)

    def reload(self, handle: ProcessHandle) -> None:
        self.processes[handle.pid].signals.append("SIGHUP")

    def kill(self, handle: ProcessHandle) -> None:
        process = self.processes[handle.pid]
        process.signals.append("SIGKILL")
        self._ended(process, -9)

    def oom_killed(self, handle: ProcessHandle, log_path: Path, memory_limited: bool) -> bool:
        process = self.processes.get(handle.pid)
        return bool(process and process.oom)

    def release(self, handle: ProcessHandle) -> None:
        pass


class FakeProber:
    """Probe answers by (port, path), else by path (``by_path``), else ``default``."""

    def __init__(self, default: Outcome = "ok") -> None:
        self.default: Outcome = default
        self.answers: dict[tuple[int, str], Outcome] = {}
        self.by_path: dict[str, Outcome] = {}
        self.calls = 0
        self.listening = True

    async def probe(self, host: str, port: int, path: str, timeout_s: float) -> Outcome:
        self.calls += 1
        return self.answers.get((port, path), self.by_path.get(path, self.default))

    async def port_answers(self, host: str, port: int, timeout_s: float) -> bool:
        return self.listening
