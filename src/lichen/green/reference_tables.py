"""Reference tables read from the ``codecarbon`` package's data files at run time: CPU TDPs and grid intensities.

Lichen depends on ``codecarbon`` for its data, not its tracker: the files are
located with :func:`importlib.util.find_spec` and read directly, so nothing of
codecarbon runs (no logging setup, no pandas import) inside the controller.

* **CPU TDP** (``data/hardware/cpu_power.csv``, columns ``Name,TDP``): the
  model name from ``/proc/cpuinfo`` is matched after normalising both sides
  (case, ``(R)``/``(TM)``, "CPU", "Processor", the clock suffix). An exact
  match wins, else the longest table name found as whole words in the model
  name. Where nothing matches, CodeCarbon's own fallback applies: 4 W per
  logical CPU.
* **Grid intensity** (``data/private_infra/``): ``WORLD`` is the world
  average of ``carbon_intensity_per_source.json`` (475 g/kWh, IEA 2019); a
  country (ISO 3166 alpha-2 or alpha-3, e.g. ``DE``/``DEU``) is its annual
  mean in ``global_energy_mix.json`` (Ember/Our World in Data, with its year);
  ``US-XX`` (a state code) is EPA eGRID's annual rate from
  ``2023/usa_emissions.json``, converted from lb/MWh.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lichen.green.intensity_apis import G_PER_KWH_PER_LB_PER_MWH

DEFAULT_W_PER_THREAD = 4.0
"""CodeCarbon's fallback for a CPU it does not know (``DEFAULT_POWER_PER_CORE`` in codecarbon/core/cpu.py)"""


class TableError(Exception):
    """A reference table is missing or unreadable, or a region is not in it."""


def data_dir() -> Path:
    """codecarbon's ``data`` folder, found without importing codecarbon."""
    spec = importlib.util.find_spec("codecarbon")
    if spec is None or not spec.submodule_search_locations:
        raise TableError("the codecarbon package is not installed (pip install codecarbon): its TDP and "
                         "energy-mix tables are where Lichen reads CPU power and grid intensity from")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _normalised(name: str) -> str:
    text = re.sub(r"\((r|tm|c)\)", " ", name.lower())
    text = re.sub(r"@\s*[\d.]+\s*[gm]hz", " ", text)
    text = re.sub(r"\b(cpu|processor|\d+-core)\b", " ", text)
    return " ".join(re.sub(r"[^a-z0-9.+-]+", " ", text).split())


@functools.lru_cache(maxsize=4)
def _cpu_table(path: Path) -> dict[str, tuple[str, float]]:
    table: dict[str, tuple[str, float]] = {}
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                try:
                    table.setdefault(_normalised(row["Name"]), (row["Name"], float(row["TDP"])))
                except (KeyError, TypeError, ValueError):
                    continue  # a malformed row of the upstream table: not ours to refuse
    except OSError as exc:
        raise TableError(f"{path}: {exc}") from None
    return table


@dataclass(frozen=True)
class CpuPower:
    tdp_w: float
    source: str
    """where the figure comes from, e.g. ``codecarbon cpu_power.csv: Intel Xeon Gold 6148``"""
    known: bool
    """False: CodeCarbon's per-thread fallback for a model the table does not have"""


def cpu_power(model_name: str, logical_cpus: int, sockets: int = 1, *, table_path: Path | None = None) -> CpuPower:
    """The TDP of the CPUs this machine sees (see the module docs for the matching)."""
    table = _cpu_table(table_path or data_dir() / "hardware" / "cpu_power.csv")
    wanted = _normalised(model_name)
    hit = table.get(wanted)
    if hit is None and wanted:
        padded = f" {wanted} "
        # whole-word matches only, and only names with a letter: a bare "460" must not match "Celeron CPU 460"
        candidates = [key for key in table if re.search(r"[a-z]", key) and f" {key} " in padded]
        if candidates:
            hit = table[max(candidates, key=len)]
    if hit is not None:
        name, tdp_w = hit
        return CpuPower(tdp_w * max(1, sockets), f"codecarbon cpu_power.csv: {name} × {max(1, sockets)} socket(s)",
                        True)
    return CpuPower(DEFAULT_W_PER_THREAD * max(1, logical_cpus),
                    f"codecarbon fallback: {DEFAULT_W_PER_THREAD:g} W × {logical_cpus} logical CPUs "
                    f"({model_name.strip() or 'unknown model'} is not in its table)", False)


@dataclass(frozen=True)
class GridIntensity:
    g_per_kwh: float
    source: str
    """the table, the region and the year, e.g. ``codecarbon global_energy_mix.json: Germany 2023``"""


@functools.lru_cache(maxsize=8)
def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TableError(f"{path}: {exc}") from None


def grid_intensity(region: str, *, root: Path | None = None) -> GridIntensity:
    """The annual location-based intensity of ``region`` (``WORLD``, a country code, or ``US-XX``)."""
    base = (root or data_dir()) / "private_infra"
    try:
        return _grid_intensity(region, base)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise TableError(f"codecarbon's intensity tables under {base} are not as expected "
                         f"({type(exc).__name__}: {exc})") from None


def _grid_intensity(region: str, base: Path) -> GridIntensity:
    code = region.strip().upper()
    if code == "WORLD":
        per_source = _json(base / "carbon_intensity_per_source.json")
        return GridIntensity(float(per_source["world_average"]),
                             "codecarbon carbon_intensity_per_source.json: world average (IEA 2019)")
    if code.startswith("US-") and len(code) == 5:
        states = _json(base / "2023" / "usa_emissions.json")
        for name, entry in states.items():
            if isinstance(entry, dict) and str(entry.get("regionCode", "")).upper() == code[3:]:
                year = states.get("_source", {}).get("year", "")
                return GridIntensity(float(entry["emissions"]) * G_PER_KWH_PER_LB_PER_MWH,
                                     f"codecarbon usa_emissions.json (EPA eGRID {year}): {name}")
        raise TableError(f"region {region!r}: no US state or region with code {code[3:]!r} in usa_emissions.json")
    mix = _json(base / "global_energy_mix.json")
    iso3 = code if len(code) == 3 else _alpha3(code)
    entry = mix.get(iso3) if iso3 else None
    if not isinstance(entry, dict) or "carbon_intensity" not in entry:
        raise TableError(f"region {region!r} is not in codecarbon's energy-mix table: use an ISO 3166 country "
                         "code (DE, FRA), US-XX for a US state, or WORLD; or set "
                         "sustainability.carbon_intensity_g_per_kwh")
    return GridIntensity(float(entry["carbon_intensity"]),
                         f"codecarbon global_energy_mix.json: {entry.get('country_name', iso3)} {entry.get('year', '')}"
                         .rstrip())


def _alpha3(code: str) -> str | None:
    if len(code) != 2:
        return None
    try:
        import pycountry  # codecarbon's own dependency: ISO 3166 codes
    except ImportError:  # pragma: no cover - installed with codecarbon
        return None
    country = pycountry.countries.get(alpha_2=code)
    return country.alpha_3 if country is not None else None
