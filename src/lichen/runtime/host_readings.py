"""What the energy meter reads of the machine, behind one narrow seam (:class:`Host`; tests pass a twin).

* :class:`PsutilHost`: system CPU times (busy and total, ``steal`` left out of
  both: time the hypervisor gave another guest is not this machine's power),
  a process's CPU seconds with its live and exited children, its resident
  memory, start time and child PIDs (GPU work often runs in a child), the
  memory size, and the CPU model with its sockets and whether it runs under a
  hypervisor (``/proc/cpuinfo``'s ``hypervisor`` flag).
* :func:`gateway_requests`: requests per (service, revision) from the
  gateway's exposition.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import psutil
from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class ProcessUsage:
    cpu_s: float
    rss_bytes: int
    started_wall_s: float
    pids: tuple[int, ...] = ()
    """the process and its live descendants"""


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
        """A process's CPU seconds (with its children's), resident bytes and start; None when it is gone."""

    def memory_total_bytes(self) -> int: ...

    def cpu_model(self) -> CpuModel: ...


class PsutilHost:
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
                rss, started = proc.memory_info().rss, proc.create_time()
            pids = [pid]
            for child in proc.children(recursive=True):  # live children: exited ones are in children_*
                with contextlib.suppress(psutil.Error, OSError):
                    c = child.cpu_times()
                    cpu_s += c.user + c.system
                    pids.append(child.pid)
            return ProcessUsage(cpu_s, rss, started, tuple(pids))
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


def gateway_requests(exposition: str) -> dict[tuple[str, str], float]:
    """Requests the gateway answered per (service, revision), summed over routes and statuses."""
    totals: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(exposition):
        if family.name == "lichen_gateway_requests":
            for sample in family.samples:
                labels = sample.labels
                if sample.name.endswith("_total") and labels.get("service") and labels.get("revision"):
                    key = (labels["service"], labels["revision"])
                    totals[key] = totals.get(key, 0.0) + sample.value
    return totals
