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
from dataclasses import dataclass

JOULES_PER_KWH = 3.6e6
IDLE_SHARE, IDLE_SHARE_RANGE = 0.3, (0.2, 0.5)
FULL_LOAD_RANGE = (0.8, 1.2)
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
        source = self.source if self.source == other.source else f"{self.source}+{other.source}"
        return Estimate(self.value + other.value, self.low + other.low, self.high + other.high, source)

    def scaled(self, factor: float) -> Estimate:
        """Times a non-negative exact factor (a share, a duration)."""
        return Estimate(self.value * factor, self.low * factor, self.high * factor, self.source)

    @property
    def relative_error(self) -> float:
        """The half-width of the band over the value (0 for a measurement)."""
        return (self.high - self.low) / 2 / self.value if self.value else 0.0


def modelled_cpu_power(tdp_w: float, utilisation: float) -> Estimate:
    """CPU package power (W) at ``utilisation`` (0–1 of the package), from its TDP (see the module docs)."""
    u = min(max(utilisation, 0.0), 1.0)
    low = FULL_LOAD_RANGE[0] * tdp_w * (IDLE_SHARE_RANGE[0] + (1 - IDLE_SHARE_RANGE[0]) * u)
    high = FULL_LOAD_RANGE[1] * tdp_w * (IDLE_SHARE_RANGE[1] + (1 - IDLE_SHARE_RANGE[1]) * u)
    return Estimate(tdp_w * (IDLE_SHARE + (1 - IDLE_SHARE) * u), low, high, "model")


def modelled_idle_power(tdp_w: float) -> Estimate:
    """The CPU's power with nothing running: the model at 0 utilisation."""
    return modelled_cpu_power(tdp_w, 0.0)


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
              other_cpu_s: float = 0.0) -> Attribution:
    """Share the node's active energy over ``node_j − idle_j`` by CPU seconds; ``other_cpu_s``: CPU time of
    processes that are not replicas, whose share stays unattributed."""
    active = Estimate(max(0.0, node_j.value - idle_j.value), max(0.0, node_j.low - idle_j.high),
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
