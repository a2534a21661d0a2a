"""Energy and carbon sums: figures with their source and an error bar, attribution, and the SCI.

Pure functions of plain data. Every figure is an :class:`Estimate`: a value, a
low and a high bound, and the source it came from (``rapl``, ``nvml``,
``model``, a trace's file name). A measured figure has equal bounds; a
modelled one carries the band of its model, so a guess never reads as a
measurement.

* **CPU power model** (:func:`modelled_cpu_power`), where no counter is
  readable: ``P(u) = TDP · (idle + (1 − idle) · u)`` with ``idle = 0.3``.
  SPECpower_ssj2008 results show server power close to linear in utilisation
  from an idle floor of 20–50 % of full-load power; CodeCarbon's
  ``TDP · (0.1 + 0.9 u³)`` puts mid loads far below such curves. The band
  spans an idle share of 0.2–0.5 and a full-load power of 0.8–1.2 × TDP.
* **Memory**: 0.375 W per GB (CodeCarbon's 3 W per 8 GB), band 0.25–0.5.
* **Attribution** (:func:`attribute`): the active energy (measured minus idle)
  goes to replicas by CPU-time share, as Kepler does; idle energy is reported
  on its own, never dropped or spread silently.
* **Carbon**: energy (kWh) × PUE × intensity (gCO₂e/kWh, location-based).
* **SCI** (ISO/IEC 21031:2024): ``(E·I + M) / R``, here per 1,000 requests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

JOULES_PER_KWH = 3.6e6
IDLE_SHARE, IDLE_SHARE_RANGE = 0.3, (0.2, 0.5)
FULL_LOAD_RANGE = (0.8, 1.2)
UNKNOWN_CPU_RANGE = (0.5, 1.5)
"""full-load power over the guess where the TDP is CodeCarbon's per-thread fallback, not the model's own figure"""
MEMORY_W_PER_GB, MEMORY_W_PER_GB_RANGE = 0.375, (0.25, 0.5)


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float
    source: str

    @classmethod
    def measured(cls, value: float, source: str) -> Estimate:
        return cls(value, value, value, source)

    def __add__(self, other: Estimate) -> Estimate:
        source = self.source if self.source == other.source else "+".join(
            sorted(set(self.source.split("+")) | set(other.source.split("+"))))
        return Estimate(self.value + other.value, self.low + other.low, self.high + other.high, source)

    def scaled(self, factor: float) -> Estimate:
        """Times a non-negative exact factor (a share, a duration)."""
        return Estimate(self.value * factor, self.low * factor, self.high * factor, self.source)

    @property
    def relative_error(self) -> float:
        """The half-width of the band over the value (0 for a measurement)."""
        return (self.high - self.low) / 2 / self.value if self.value else 0.0


def modelled_cpu_power(tdp_w: float, utilisation: float,
                       full_load_range: tuple[float, float] = FULL_LOAD_RANGE) -> Estimate:
    """CPU package power (W) at ``utilisation`` (0–1 of the package), from its TDP (see the module docs)."""
    u = min(max(utilisation, 0.0), 1.0)
    low = full_load_range[0] * tdp_w * (IDLE_SHARE_RANGE[0] + (1 - IDLE_SHARE_RANGE[0]) * u)
    high = full_load_range[1] * tdp_w * (IDLE_SHARE_RANGE[1] + (1 - IDLE_SHARE_RANGE[1]) * u)
    return Estimate(tdp_w * (IDLE_SHARE + (1 - IDLE_SHARE) * u), low, high, "model")


def modelled_idle_power(tdp_w: float, full_load_range: tuple[float, float] = FULL_LOAD_RANGE) -> Estimate:
    """The CPU's power with nothing running: the model at 0 utilisation."""
    return modelled_cpu_power(tdp_w, 0.0, full_load_range)


def modelled_active_power(tdp_w: float, utilisation: float,
                          full_load_range: tuple[float, float] = FULL_LOAD_RANGE) -> Estimate:
    """The model's power above idle at ``utilisation``: ``TDP · (1 − idle) · u``. Its band comes from the same
    model as the total's (a low idle share goes with a steep slope), so it is much narrower than the total's
    band minus the idle band."""
    u = min(max(utilisation, 0.0), 1.0)
    return Estimate(tdp_w * (1 - IDLE_SHARE) * u, full_load_range[0] * tdp_w * (1 - IDLE_SHARE_RANGE[1]) * u,
                    full_load_range[1] * tdp_w * (1 - IDLE_SHARE_RANGE[0]) * u, "model")


def idle_power_from(power_w: float, utilisation: float) -> Estimate:
    """Idle power backed out of a measured power at ``utilisation`` with the model's shape (RAPL gives the
    total, not its idle part): ``P / (1 + (1 − idle)/idle · u)``, band from the idle share's range; at
    ``u = 0`` the measurement itself."""
    u = min(max(utilisation, 0.0), 1.0)

    def at(share: float) -> float:
        return power_w / (1 + (1 - share) / share * u)

    return Estimate(at(IDLE_SHARE), at(IDLE_SHARE_RANGE[0]), at(IDLE_SHARE_RANGE[1]), "model")


def modelled_memory_power(gigabytes: float) -> Estimate:
    return Estimate(MEMORY_W_PER_GB * gigabytes, MEMORY_W_PER_GB_RANGE[0] * gigabytes,
                    MEMORY_W_PER_GB_RANGE[1] * gigabytes, "model")


@dataclass(frozen=True)
class Attribution:
    by_replica: Mapping[str, Estimate]
    idle: Estimate
    """energy the node used with nothing running: reported, not spread over replicas"""
    unattributed: Estimate
    """active energy with no replica CPU time to share it by (the controller, the gateway, the OS)"""


def attribute(node_j: Estimate, idle_j: Estimate, cpu_s: Mapping[str, float],
              other_cpu_s: float = 0.0, active_j: Estimate | None = None) -> Attribution:
    """Share the node's active energy, ``node_j − idle_j`` (or ``active_j`` where the model gives it with its
    own band), by CPU seconds; ``other_cpu_s``: CPU time of processes that are not replicas, whose share
    stays unattributed."""
    active = active_j if active_j is not None else Estimate(
        max(0.0, node_j.value - idle_j.value), max(0.0, node_j.low - idle_j.high),
        max(0.0, node_j.high - idle_j.low), node_j.source)
    total = sum(max(0.0, s) for s in cpu_s.values()) + max(0.0, other_cpu_s)
    if total <= 0:
        return Attribution({}, idle_j, active)
    shares = {replica: active.scaled(max(0.0, s) / total) for replica, s in cpu_s.items()}
    return Attribution(shares, idle_j, active.scaled(max(0.0, other_cpu_s) / total))


def carbon_g(energy_j: Estimate, intensity_g_per_kwh: Estimate, pue: float = 1.0) -> Estimate:
    """Grams CO₂e of ``energy_j`` at the facility (× PUE) and a location-based intensity."""
    kwh = energy_j.scaled(pue / JOULES_PER_KWH)
    source = f"{energy_j.source}@{intensity_g_per_kwh.source}"
    return Estimate(kwh.value * intensity_g_per_kwh.value, kwh.low * intensity_g_per_kwh.low,
                    kwh.high * intensity_g_per_kwh.high, source)


def sci_per_1000_requests(energy_j: Estimate, intensity_g_per_kwh: Estimate, requests: float, pue: float = 1.0,
                          embodied_g: float = 0.0) -> Estimate | None:
    """The Software Carbon Intensity, (E·I + M) / R, per 1,000 requests; None without a request."""
    if requests <= 0:
        return None
    operational = carbon_g(energy_j, intensity_g_per_kwh, pue)
    total = operational + Estimate.measured(embodied_g, operational.source)
    return total.scaled(1000.0 / requests)


# ------------------------------------------------------------ one interval


@dataclass(frozen=True)
class ReplicaUsage:
    """What one replica used over a sampling interval (from the process table and its placement)."""

    replica: str
    service: str
    revision: str
    cpu_s: float
    rss_gb: float = 0.0
    gpu_indices: tuple[int, ...] = ()
    reserved_cpus: float | None = None
    """cores reserved for it (``resources.cpu``), for its share of the machine's embodied carbon"""


@dataclass(frozen=True)
class GpuInterval:
    """One GPU over the interval: its energy and, where NVML reports it, each process's SM utilisation."""

    energy_j: Estimate
    utilisation_by_replica: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class IntervalAccount:
    by_replica: Mapping[tuple[str, str], Estimate]
    """(replica, source) -> joules: CPU and memory under the node's source, GPU under ``nvml``"""
    idle: Estimate
    unattributed: Estimate
    gpu_unattributed: Estimate | None = None
    """energy of GPUs no replica was assigned to"""


def account_interval(usages: list[ReplicaUsage] | tuple[ReplicaUsage, ...], *, cpu_j: Estimate, cpu_idle_j: Estimate,
                     busy_cpu_s: float, cpu_active_j: Estimate | None = None,
                     memory_j_per_gb: Estimate | None = None,
                     gpus: Mapping[int, GpuInterval] | None = None) -> IntervalAccount:
    """Share one interval's energy over the replicas that ran in it.

    * CPU: :func:`attribute` — active energy by CPU-time share, idle apart; the CPU time of other processes
      (``busy_cpu_s`` minus the replicas') keeps its share unattributed.
    * Memory (only where the node's figure is modelled; a RAPL DRAM zone is already in ``cpu_j``):
      ``memory_j_per_gb`` (the model's joules per GB over the interval) times each replica's resident GB.
    * GPU: a device's energy goes to the replicas assigned to it, by their SM utilisation where NVML
      reports it for any of them, else equally; a device no replica holds stays unattributed.
    """
    replica_cpu_s = {u.replica: u.cpu_s for u in usages}
    other_cpu_s = max(0.0, busy_cpu_s - sum(max(0.0, s) for s in replica_cpu_s.values()))
    cpu = attribute(cpu_j, cpu_idle_j, replica_cpu_s, other_cpu_s, cpu_active_j)
    shares: dict[tuple[str, str], Estimate] = {}
    for replica, estimate in cpu.by_replica.items():
        shares[(replica, estimate.source)] = estimate
    if memory_j_per_gb is not None:
        for usage in usages:
            key = (usage.replica, cpu_j.source)
            memory = memory_j_per_gb.scaled(max(0.0, usage.rss_gb))
            shares[key] = _relabelled(shares[key] + memory, cpu_j.source) if key in shares else \
                _relabelled(memory, cpu_j.source)
    gpu_unattributed: Estimate | None = None
    for index, gpu in sorted((gpus or {}).items()):
        holders = [u.replica for u in usages if index in u.gpu_indices]
        if not holders:
            gpu_unattributed = gpu.energy_j if gpu_unattributed is None else gpu_unattributed + gpu.energy_j
            continue
        utilisation = {r: max(0.0, float(gpu.utilisation_by_replica.get(r, 0.0))) for r in holders} \
            if gpu.utilisation_by_replica else {}
        total = sum(utilisation.values())
        for replica in holders:
            share = utilisation[replica] / total if total > 0 else 1.0 / len(holders)
            key = (replica, gpu.energy_j.source)
            part = gpu.energy_j.scaled(share)
            shares[key] = shares[key] + part if key in shares else part
    return IntervalAccount(shares, cpu.idle, cpu.unattributed, gpu_unattributed)


def _relabelled(estimate: Estimate, source: str) -> Estimate:
    return Estimate(estimate.value, estimate.low, estimate.high, source)


def sum_estimates(estimates: list[Estimate] | tuple[Estimate, ...]) -> Estimate | None:
    """The sum of several figures (sources joined), None for none."""
    total: Estimate | None = None
    for estimate in estimates:
        total = estimate if total is None else total + estimate
    return total
