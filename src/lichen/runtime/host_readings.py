"""What the energy meter reads of the machine, behind one narrow seam (:class:`Host`; tests pass a twin).

* :class:`PsutilHost`: system CPU times (busy and total, ``steal`` left out of
  both: time the hypervisor gave another guest is not this machine's power),
  a process's CPU seconds with its live and exited children, the resident
  memory of it and its live children (what a cgroup limits), the largest
  data segment among them (what ``RLIMIT_DATA`` limits, per process), its
  start time and child PIDs (GPU work often runs in a child), the
  memory size, and the CPU model with its sockets and whether it runs under a
  hypervisor (``/proc/cpuinfo``'s ``hypervisor`` flag).
* :func:`gateway_requests`: requests per (service, revision) from the
  gateway's exposition.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import psutil


@dataclass(frozen=True)
class ProcessUsage:
    cpu_s: float
    rss_bytes: int
    started_wall_s: float
    pids: tuple[int, ...] = ()
    """the process and its live descendants"""
    data_bytes: int = 0
    """the largest data segment and private mappings in the tree (``RLIMIT_DATA`` binds each process)"""


@dataclass(frozen=True)
class CpuModel:
    name: str
    logical_cpus: int
    sockets: int = 1
    virtual: bool = False
    """under a hypervisor: a table's TDP would be the host's whole package"""


class Host(Protocol):
    def cpu_times(self) -> tuple[float, float]:
        """Cumulative (busy, total) CPU seconds over every CPU."""

    def process(self, pid: int) -> ProcessUsage | None:
        """A process's CPU seconds and resident bytes (with its children's), its largest data segment and its
        start; None when it is gone."""

    def memory_total_bytes(self) -> int: ...

    def cpu_model(self) -> CpuModel: ...

    def begin_sample(self) -> None:
        """Called before a sample's ``process`` calls (a host may read the process table once there)."""


class PsutilHost:
    def __init__(self) -> None:
        self.children_of: dict[int, list[int]] = {}

    def begin_sample(self) -> None:
        """One pass over the process table per sample, not one per replica (``Process.children`` scans it
        every call)."""
        children: dict[int, list[int]] = {}
        ppid_map = getattr(psutil, "_ppid_map", None)  # what Process.children reads: one /proc pass, 3x cheaper
        try:
            pairs = ppid_map().items() if ppid_map is not None else None
        except (psutil.Error, OSError):
            pairs = None
        if pairs is None:  # psutil without it: the public, slower way
            pairs = [(p.pid, p.info.get("ppid")) for p in psutil.process_iter(["ppid"])]
        for pid, ppid in pairs:
            if ppid:
                children.setdefault(ppid, []).append(pid)
        self.children_of = children

    def _descendants(self, pid: int) -> list[int]:
        found, stack = [], list(self.children_of.get(pid, ()))
        while stack:
            child = stack.pop()
            found.append(child)
            stack.extend(self.children_of.get(child, ()))
        return found

    def cpu_times(self) -> tuple[float, float]:
        t = psutil.cpu_times()
        idle = t.idle + getattr(t, "iowait", 0.0)
        total = sum(getattr(t, f, 0.0) for f in ("user", "nice", "system", "idle", "iowait", "irq", "softirq"))
        return total - idle, total

    def process(self, pid: int) -> ProcessUsage | None:
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                t = proc.cpu_times()
                cpu_s = t.user + t.system + t.children_user + t.children_system
                memory, started = proc.memory_info(), proc.create_time()
            rss, data = memory.rss, getattr(memory, "data", 0)
            pids = [pid]
            for child in self._descendants(pid):  # live children: exited ones are in children_*
                with contextlib.suppress(psutil.Error, OSError):
                    child_proc = psutil.Process(child)
                    with child_proc.oneshot():
                        c, child_memory = child_proc.cpu_times(), child_proc.memory_info()
                    cpu_s += c.user + c.system
                    rss += child_memory.rss  # a cgroup's memory.max counts the whole tree
                    data = max(data, getattr(child_memory, "data", 0))  # RLIMIT_DATA binds each process alone
                    pids.append(child)
            return ProcessUsage(cpu_s, rss, started, tuple(pids), data)
        except (psutil.Error, OSError):
            return None

    def memory_total_bytes(self) -> int:
        return int(psutil.virtual_memory().total)

    def cpu_model(self) -> CpuModel:
        name, sockets, virtual = "", set(), False
        with contextlib.suppress(OSError):
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not name:
                    name = value.strip()
                elif key == "physical id":
                    sockets.add(value.strip())
                elif key == "flags" and "hypervisor" in value.split():
                    virtual = True
        return CpuModel(name, psutil.cpu_count() or 1, max(1, len(sockets)), virtual)


_REQUESTS = "lichen_gateway_requests_total{"
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_ESCAPE = re.compile(r"\\(.)")


def _unescape(match: re.Match[str]) -> str:
    return "\n" if match.group(1) == "n" else match.group(1)


def gateway_requests(exposition: str) -> dict[tuple[str, str], float]:
    """Requests the gateway answered per (service, revision), summed over routes and statuses.

    Only the ``lichen_gateway_requests_total`` lines are read (a scan, not a parse of the whole
    exposition: the meter reads it every sample); a line that does not parse is skipped."""
    totals: dict[tuple[str, str], float] = {}
    start = exposition.find(_REQUESTS)
    while start != -1:
        end = exposition.find("\n", start)
        at_line_start = start == 0 or exposition[start - 1] == "\n"
        line = exposition[start:end if end != -1 else len(exposition)]
        start = exposition.find(_REQUESTS, end) if end != -1 else -1
        if not at_line_start:
            continue
        labels_text, _, value_text = line[len(_REQUESTS):].rpartition("} ")
        labels = {k: _ESCAPE.sub(_unescape, v) for k, v in _LABEL.findall(labels_text)}
        try:
            value = float(value_text.split()[0])
        except (ValueError, IndexError):
            continue
        if labels.get("service") and labels.get("revision"):
            key = (labels["service"], labels["revision"])
            totals[key] = totals.get(key, 0.0) + value
    return totals
