"""Placement: grant a replica CPU, memory and GPUs, or refuse what does not fit.

Requests are summed against the machine (no overcommit). GPUs are distinct
indices; a CPU request of ``c`` cores pins the replica to ``ceil(c)`` of the
least-loaded cores (used for CPU affinity when cgroups are not writable).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from lichen.control.plans import Machine, Placement
from lichen.spec.models import ResourcesSpec


class Refusal(str):
    """Why a request does not fit (a message for events).

    ``never_fits`` is True when one replica asks for more than the whole
    machine has, so no amount of waiting for room helps.
    """

    never_fits: bool

    def __new__(cls, message: str, never_fits: bool = False) -> Refusal:
        refusal = super().__new__(cls, message)
        refusal.never_fits = never_fits
        return refusal


THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def thread_caps(cpu_cores: float | None) -> dict[str, str]:
    """The BLAS/OpenMP thread counts for a CPU limit of ``cpu_cores`` (``ceil``, at least 1); none without one.
    ``lichen up`` sets them on a replica, and the Kubernetes renderer on a container."""
    if cpu_cores is None:
        return {}
    threads = str(max(1, math.ceil(cpu_cores)))
    return dict.fromkeys(THREAD_VARIABLES, threads)


def _exceeds_machine(request: ResourcesSpec, machine: Machine) -> str:
    if request.cpu is not None and request.cpu > machine.cpu_cores + 1e-9:
        return f"cpu {request.cpu:g} is more than this machine has ({machine.cpu_cores:g} cores)"
    if request.memory is not None and request.memory > machine.memory_bytes:
        return (f"memory {request.memory / 2**20:.0f}Mi is more than this machine has "
                f"({machine.memory_bytes / 2**20:.0f}Mi)")
    if request.gpu > len(machine.gpu_indices):
        return f"gpu {request.gpu} is more than this machine has ({len(machine.gpu_indices)} GPUs)"
    return ""


def grant_gpus(requested: int, machine_gpus: tuple[int, ...], in_use: Iterable[int] = ()) -> tuple[int, ...] | Refusal:
    """The GPUs a job gets: the first ``requested`` of ``machine_gpus`` not ``in_use`` (none for 0), or why not."""
    if requested <= 0:
        return ()
    if requested > len(machine_gpus):
        return Refusal(f"gpu {requested} is more than this machine has ({len(machine_gpus)} GPUs)", never_fits=True)
    busy = set(in_use)
    free = [index for index in machine_gpus if index not in busy]
    if len(free) < requested:
        return Refusal(f"gpu {requested} does not fit: {len(free)} of {len(machine_gpus)} GPUs free")
    return tuple(free[:requested])


def place(request: ResourcesSpec, machine: Machine, granted: Iterable[Placement]) -> Placement | Refusal:
    granted = list(granted)
    cpu_used = sum(p.cpu_cores or 0.0 for p in granted)
    memory_used = sum(p.memory_bytes or 0 for p in granted)
    gpus_used = {index for p in granted for index in p.gpu_indices}
    too_big = _exceeds_machine(request, machine)
    if too_big:
        return Refusal(too_big, never_fits=True)
    if request.cpu is not None and cpu_used + request.cpu > machine.cpu_cores + 1e-9:
        return Refusal(
            f"cpu {request.cpu:g} does not fit: {cpu_used:g} of {machine.cpu_cores:g} cores already granted"
        )
    if request.memory is not None and memory_used + request.memory > machine.memory_bytes:
        return Refusal(
            f"memory {request.memory / 2**20:.0f}Mi does not fit: {memory_used / 2**20:.0f}Mi of "
            f"{machine.memory_bytes / 2**20:.0f}Mi already granted"
        )
    gpu_indices: tuple[int, ...] = ()
    if request.gpu:
        free = [i for i in machine.gpu_indices if i not in gpus_used]
        if len(free) < request.gpu:
            return Refusal(
                f"gpu {request.gpu} does not fit: {len(free)} of {len(machine.gpu_indices)} GPUs free"
            )
        gpu_indices = tuple(free[: request.gpu])
    cpu_set: tuple[int, ...] = ()
    cores = int(machine.cpu_cores)
    if request.cpu is not None and cores > 0:
        load = [0.0] * cores
        for p in granted:
            for core in p.cpu_set:
                if core < cores and p.cpu_set:
                    load[core] += (p.cpu_cores or 0.0) / len(p.cpu_set)
        wanted = min(cores, max(1, math.ceil(request.cpu - 1e-9)))
        cpu_set = tuple(sorted(sorted(range(cores), key=lambda c: (load[c], c))[:wanted]))
    return Placement(cpu_cores=request.cpu, memory_bytes=request.memory, gpu_indices=gpu_indices, cpu_set=cpu_set)
