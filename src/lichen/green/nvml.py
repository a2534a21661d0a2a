"""NVIDIA GPU energy through NVML (``nvidia-ml-py``): per-device energy counters, power and per-process utilisation.

:class:`NvmlReader` reads every GPU once per call: the total-energy counter
(millijoules since the driver loaded, Volta and newer) where the device has
one, else the power draw (milliwatts) for the caller to integrate over its
interval, and the SM utilisation of each process NVML sampled since the last
read. :func:`gpu_energy_j` turns two readings into joules. A machine with no
NVML library or no GPU raises :class:`NvmlUnavailable` with the reason, which
the caller reports and degrades on. Tests pass a twin with the same ``read``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class NvmlUnavailable(Exception):
    """No NVML here (no library, no driver, no GPU), with NVML's reason."""


@dataclass(frozen=True)
class GpuReading:
    index: int
    uuid: str
    energy_mj: int | None
    """the device's total-energy counter, None where the device has none"""
    power_mw: int | None
    utilisation_by_pid: dict[int, float] = field(default_factory=dict)
    """SM utilisation (%) of each process NVML sampled since the previous read"""


class GpuSource(Protocol):
    def read(self) -> list[GpuReading]: ...

    def close(self) -> None: ...


def gpu_energy_j(before: GpuReading, after: GpuReading, interval_s: float) -> tuple[float, float, float, str]:
    """Joules one GPU used between two reads, with a low and a high bound, and how they were found: the
    counter's difference (``nvml``, a measurement: equal bounds), or, without a counter, the mean of the two
    power reads over the interval (``nvml-power``), bounded by the lower and the higher read."""
    if before.energy_mj is not None and after.energy_mj is not None and after.energy_mj >= before.energy_mj:
        joules = (after.energy_mj - before.energy_mj) / 1000.0
        return joules, joules, joules, "nvml"
    powers_w = [p / 1000.0 for p in (before.power_mw, after.power_mw) if p is not None]
    if not powers_w:
        return 0.0, 0.0, 0.0, "nvml-power"
    seconds = max(0.0, interval_s)
    return (sum(powers_w) / len(powers_w) * seconds, min(powers_w) * seconds, max(powers_w) * seconds,
            "nvml-power")


class NvmlReader:
    """The real NVML (see the module docs); ``library`` is the ``pynvml`` module (a seam for tests)."""

    def __init__(self, library: Any = None) -> None:
        if library is None:
            try:
                import pynvml as library  # nvidia-ml-py
            except ImportError as exc:  # pragma: no cover - a dependency of Lichen
                raise NvmlUnavailable(f"nvidia-ml-py is not installed: {exc}") from None
        self.nvml = library
        try:
            library.nvmlInit()
            count = int(library.nvmlDeviceGetCount())
        except library.NVMLError as exc:
            raise NvmlUnavailable(f"NVML: {exc}") from None
        if count == 0:
            library.nvmlShutdown()
            raise NvmlUnavailable("NVML: no GPU on this machine")
        try:
            self.handles = [library.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except library.NVMLError as exc:
            library.nvmlShutdown()
            raise NvmlUnavailable(f"NVML: a device could not be opened: {exc}") from None
        self.last_seen_us = [0] * count

    def _optional(self, call: Any, *args: Any) -> Any:
        try:
            return call(*args)
        except self.nvml.NVMLError:
            return None

    def read(self) -> list[GpuReading]:
        readings = []
        for index, handle in enumerate(self.handles):
            uuid = self._optional(self.nvml.nvmlDeviceGetUUID, handle)
            utilisation: dict[int, float] = {}
            samples = self._optional(self.nvml.nvmlDeviceGetProcessUtilization, handle, self.last_seen_us[index])
            for sample in samples or ():
                utilisation[int(sample.pid)] = max(utilisation.get(int(sample.pid), 0.0), float(sample.smUtil))
                self.last_seen_us[index] = max(self.last_seen_us[index], int(sample.timeStamp))
            readings.append(GpuReading(
                index, uuid.decode() if isinstance(uuid, bytes) else str(uuid or index),
                self._optional(self.nvml.nvmlDeviceGetTotalEnergyConsumption, handle),
                self._optional(self.nvml.nvmlDeviceGetPowerUsage, handle), utilisation))
        return readings

    def close(self) -> None:
        self._optional(self.nvml.nvmlShutdown)
