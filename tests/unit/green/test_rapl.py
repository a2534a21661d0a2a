"""RAPL counters (lichen.green.rapl) on a temporary powercap tree: packages and DRAM sub-zones are read, a
counter that wraps gives the right joules, and unreadable zones are left out with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from lichen.green.rapl import ZoneReading, energy_delta_j, read_zones


def zone(root: Path, name: str, label: str, energy_uj: int, max_uj: int = 262_143_328_850) -> Path:
    path = root / name
    path.mkdir(parents=True)
    (path / "name").write_text(label + "\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    (path / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return path


def test_packages_and_dram_zones_are_read(tmp_path: Path) -> None:
    package = zone(tmp_path, "intel-rapl:0", "package-0", 5_000_000)
    zone(package, "intel-rapl:0:0", "dram", 1_000_000)
    zone(tmp_path, "intel-rapl:1", "package-1", 7_000_000)
    readings, problems = read_zones(tmp_path)
    assert [(r.zone, r.energy_uj) for r in readings] == [("package-0", 5_000_000), ("package-0/dram", 1_000_000),
                                                          ("package-1", 7_000_000)]
    assert problems == []


def test_a_wrapped_counter_still_gives_the_energy_between_two_reads() -> None:
    before = ZoneReading("package-0", 262_143_000_000, 262_143_328_850)
    after = ZoneReading("package-0", 671_150, 262_143_328_850)
    assert energy_delta_j(before, after) == pytest.approx(1.0)  # 328_850 + 671_150 uJ
    assert energy_delta_j(ZoneReading("p", 1_000_000, 10**9), ZoneReading("p", 3_500_000, 10**9)) == 2.5


def test_an_unreadable_zone_is_left_out_with_the_reason(tmp_path: Path) -> None:
    broken = zone(tmp_path, "intel-rapl:0", "package-0", 1)
    (broken / "energy_uj").write_text("not a number\n")
    other = zone(tmp_path, "intel-rapl:1", "package-1", 1)
    (other / "energy_uj").unlink()
    (other / "energy_uj").mkdir()  # a read fails as an OSError (as EACCES does for a non-root user)
    readings, problems = read_zones(tmp_path)
    assert readings == [] and len(problems) == 2
    assert problems[0].startswith(f"{broken / 'energy_uj'}: invalid literal") and "Is a directory" in problems[1]


def test_no_powercap_says_so(tmp_path: Path) -> None:
    assert read_zones(tmp_path / "nope") == ([], [f"{tmp_path / 'nope'} does not exist (no powercap: a VM, or not "
                                                  "Linux)"])
    assert read_zones(tmp_path) == ([], [f"{tmp_path} has no intel-rapl zone"])
