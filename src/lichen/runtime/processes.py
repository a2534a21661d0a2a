"""The process seam: start, watch, signal and identify supervised processes.

:class:`ProcessLauncher` starts any command (a ``lichen serve`` replica or
another process such as the gateway) in its own process group
(``start_new_session``), with stdout/stderr appended to a log file, and
enforces resources:

* cgroup v2, when ``/sys/fs/cgroup`` is a writable unified hierarchy:
  ``memory.max``, ``cpu.max`` and ``cpuset.cpus`` in a per-process group
  under ``/sys/fs/cgroup/lichen``; an OOM kill shows in ``memory.events``;
* otherwise rlimits and CPU affinity: ``RLIMIT_DATA`` caps the private
  writable memory a process maps (heap, anonymous mmaps, thread stacks: on
  Linux >= 4.7 what it could actually dirty), ``sched_setaffinity`` pins to
  the placed cores. Unlike ``RLIMIT_AS`` it does not count shared libraries,
  read-only mmaps (model weights) or address space reserved but never made
  writable, which would make ``memory: 256Mi`` refuse a replica that merely
  imports scipy. An allocation over the limit fails inside the process
  (Python raises ``MemoryError``); the exit is reported as OOMKilled when
  the log tail shows the allocation failure.

A process is identified by ``(pid, create_time)`` so a recycled pid is never
mistaken for a replica.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import psutil

CGROUP_ROOT = Path("/sys/fs/cgroup")
OOM_MARKERS = ("MemoryError", "Cannot allocate memory", "std::bad_alloc", "out of memory",
               "failed to map segment from shared object")


@dataclass(frozen=True)
class LaunchRequest:
    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    log_path: Path
    memory_bytes: int | None = None
    cpu_cores: float | None = None
    cpu_set: tuple[int, ...] = ()


@dataclass
class ProcessHandle:
    pid: int
    create_time: float
    popen: subprocess.Popen[bytes] | None = None
    cgroup: Path | None = None
    returncode: int | None = None
    extra: dict[str, object] = field(default_factory=dict)


def cgroup_v2_writable(root: Path = CGROUP_ROOT) -> bool:
    controllers = root / "cgroup.controllers"
    return controllers.exists() and os.access(root, os.W_OK)


def process_create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def is_alive(pid: int, create_time: float | None) -> bool:
    """True when ``pid`` still names the process started at ``create_time`` and is not a zombie."""
    try:
        process = psutil.Process(pid)
        if create_time is not None and abs(process.create_time() - create_time) > 0.05:
            return False
        return process.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def signal_group(pid: int, sig: int) -> None:
    """Send ``sig`` to the process group led by ``pid`` (falls back to the pid)."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return
    except PermissionError:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def group_alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def log_tail(path: Path, max_bytes: int = 2048, since_offset: int = 0) -> str:
    """The last ``max_bytes`` of a log file (never before ``since_offset``)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            start = max(0, size - max_bytes)
            if since_offset <= size:
                start = max(start, since_offset)
            f.seek(start)
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def rotate_log(path: Path, max_bytes: int, backups: int = 3) -> bool:
    """Copy-and-truncate rotation (the writer keeps its O_APPEND descriptor)."""
    try:
        if path.stat().st_size < max_bytes:
            return False
    except OSError:
        return False
    for n in range(backups - 1, 0, -1):
        older = path.with_name(f"{path.name}.{n}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{n + 1}"))
    shutil.copyfile(path, path.with_name(f"{path.name}.1"))
    with path.open("r+b") as f:
        f.truncate(0)
    return True


class ProcessLauncher:
    """Starts processes for real; :class:`lichen.testing.FakeLauncher` is its twin."""

    def __init__(self, use_cgroups: bool | None = None, cgroup_root: Path = CGROUP_ROOT) -> None:
        self.cgroup_root = cgroup_root
        self.use_cgroups = cgroup_v2_writable(cgroup_root) if use_cgroups is None else use_cgroups

    @property
    def enforcement(self) -> str:
        return "cgroup v2" if self.use_cgroups else "rlimit + affinity"

    def _cgroup_for(self, request: LaunchRequest) -> Path | None:
        if not self.use_cgroups or (request.memory_bytes is None and request.cpu_cores is None):
            return None
        try:
            parent = self.cgroup_root / "lichen"
            parent.mkdir(exist_ok=True)
            with contextlib.suppress(OSError):
                (parent / "cgroup.subtree_control").write_text("+memory +cpu +cpuset")
            group = parent / request.name
            group.mkdir(exist_ok=True)
            if request.memory_bytes is not None:
                (group / "memory.max").write_text(str(request.memory_bytes))
                with contextlib.suppress(OSError):
                    (group / "memory.swap.max").write_text("0")
            if request.cpu_cores is not None:
                period = 100_000
                (group / "cpu.max").write_text(f"{int(request.cpu_cores * period)} {period}")
            if request.cpu_set:
                with contextlib.suppress(OSError):
                    (group / "cpuset.cpus").write_text(",".join(map(str, request.cpu_set)))
            return group
        except OSError:
            return None

    def launch(self, request: LaunchRequest) -> ProcessHandle:
        request.log_path.parent.mkdir(parents=True, exist_ok=True)
        cgroup = self._cgroup_for(request)
        memory = request.memory_bytes if cgroup is None else None
        cpu_set = request.cpu_set if cgroup is None else ()

        def prepare_child() -> None:  # runs in the child between fork and exec
            if cgroup is not None:
                (cgroup / "cgroup.procs").write_text(str(os.getpid()))
            if memory is not None:
                resource.setrlimit(resource.RLIMIT_DATA, (memory, memory))
            if cpu_set:
                os.sched_setaffinity(0, cpu_set)

        log = os.open(request.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        log_offset = os.fstat(log).st_size
        try:
            popen = subprocess.Popen(
                request.argv,
                cwd=request.cwd,
                env=request.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                preexec_fn=prepare_child,
                close_fds=True,
            )
        finally:
            os.close(log)
        create_time = process_create_time(popen.pid) or 0.0
        return ProcessHandle(pid=popen.pid, create_time=create_time, popen=popen, cgroup=cgroup,
                             extra={"log_offset": log_offset})

    def adopt(self, pid: int, create_time: float, name: str) -> ProcessHandle | None:
        """A handle on a process started by an earlier controller, if it is still that process."""
        if not is_alive(pid, create_time):
            return None
        group = self.cgroup_root / "lichen" / name
        return ProcessHandle(pid=pid, create_time=create_time, cgroup=group if group.exists() else None)

    def poll(self, handle: ProcessHandle) -> int | None:
        """The exit status once the process is gone (negative: killed by that signal); None while alive.

        An adopted process is not our child: its status is unknown, reported as -255.
        """
        if handle.returncode is not None:
            return handle.returncode
        if handle.popen is not None:
            code = handle.popen.poll()
            if code is not None and group_alive(handle.pid) and not is_alive(handle.pid, None):
                signal_group(handle.pid, signal.SIGKILL)  # the leader died: take its group with it
            handle.returncode = code
            return code
        if is_alive(handle.pid, handle.create_time):
            return None
        handle.returncode = -255
        return handle.returncode

    def terminate(self, handle: ProcessHandle) -> None:
        signal_group(handle.pid, signal.SIGTERM)

    def reload(self, handle: ProcessHandle) -> None:
        """SIGHUP to the process itself (not its group): "re-read your config now"."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(handle.pid, signal.SIGHUP)

    def kill(self, handle: ProcessHandle) -> None:
        signal_group(handle.pid, signal.SIGKILL)

    def oom_killed(self, handle: ProcessHandle, log_path: Path, memory_limited: bool) -> bool:
        """Was this exit a kill for memory? cgroup ``oom_kill`` count, else the log tail under an rlimit."""
        if handle.cgroup is not None:
            try:
                events = (handle.cgroup / "memory.events").read_text()
                for line in events.splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill" and int(value) > 0:
                        return True
            except (OSError, ValueError):
                pass
        if not memory_limited or handle.returncode in (0, None):
            return False
        offset = handle.extra.get("log_offset", 0)
        tail = log_tail(log_path, 64 * 1024, since_offset=offset if isinstance(offset, int) else 0)
        return any(marker in tail for marker in OOM_MARKERS)

    def release(self, handle: ProcessHandle) -> None:
        if handle.cgroup is not None:
            with contextlib.suppress(OSError):
                handle.cgroup.rmdir()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now, for a new process to listen on."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
