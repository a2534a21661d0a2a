"""RAPL energy counters through Linux powercap (``/sys/class/powercap/intel-rapl:*``).

Each package (and its ``dram`` sub-zone, where present) exposes
``energy_uj``, a counter in microjoules that wraps at ``max_energy_range_uj``.
:func:`read_zones` reads them (an unreadable zone, as inside most VMs or
without root on recent kernels, is left out and said why);
:func:`energy_delta_j` turns two reads into joules, across one wrap.
The filesystem is a seam: tests pass a temporary directory shaped like
powercap.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

POWERCAP = Path("/sys/class/powercap")


@dataclass(frozen=True)
class ZoneReading:
    zone: str
    """e.g. ``package-0`` or ``package-0/dram``"""
    energy_uj: int
    max_energy_uj: int


def energy_delta_j(before: ZoneReading, after: ZoneReading) -> float:
    """Joules between two reads of one zone; a counter that went down wrapped once at its range."""
    delta = after.energy_uj - before.energy_uj
    if delta < 0:
        delta += after.max_energy_uj
    return max(0, delta) / 1e6


def _read_int(path: Path) -> int:
    return int(path.read_text().strip())


def read_zones(root: Path = POWERCAP) -> tuple[list[ZoneReading], list[str]]:
    """Every readable RAPL zone under ``root``, and why each other one could not be read."""
    readings: list[ZoneReading] = []
    problems: list[str] = []
    if not root.is_dir():
        return readings, [f"{root} does not exist (no powercap: a VM, or not Linux)"]
    for zone in sorted(p for p in root.glob("intel-rapl:*") if p.is_dir() and p.name.count(":") == 1):
        for path in (zone, *sorted(z for z in zone.glob(f"{zone.name}:*") if z.is_dir())):
            try:
                name = (path / "name").read_text().strip()
                label = name if path == zone else f"{(zone / 'name').read_text().strip()}/{name}"
                readings.append(ZoneReading(label, _read_int(path / "energy_uj"),
                                            _read_int(path / "max_energy_range_uj")))
            except PermissionError:
                problems.append(f"{path / 'energy_uj'}: permission denied (readable by root only on this kernel)")
            except (OSError, ValueError) as exc:
                problems.append(f"{path / 'energy_uj'}: {exc}")
    if not readings and not problems:
        problems.append(f"{root} has no intel-rapl zone")
    return readings, problems
