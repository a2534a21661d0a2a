"""Reference tables (lichen.green.reference_tables) read from codecarbon's own data files: CPU TDPs matched from
/proc/cpuinfo model names, the per-thread fallback, and grid intensity by world, country and US state."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from lichen.green.intensity_apis import G_PER_KWH_PER_LB_PER_MWH
from lichen.green.reference_tables import TableError, cpu_power, data_dir, grid_intensity


def _tdp_in_table(name: str) -> float:
    with (data_dir() / "hardware" / "cpu_power.csv").open(newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle) if row["Name"] == name]
    assert rows, f"{name} is not in codecarbon's cpu_power.csv"
    return float(rows[0]["TDP"])


def _private_infra(name: str) -> dict:
    return json.loads((data_dir() / "private_infra" / name).read_text(encoding="utf-8"))


# ------------------------------------------------------------------- CPU TDP


def test_an_intel_cpuinfo_name_matches_the_table_entry_and_counts_sockets() -> None:
    expected = _tdp_in_table("Intel Xeon Gold 6148")
    one = cpu_power("Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz", logical_cpus=40)
    assert one.known is True and one.tdp_w == pytest.approx(expected)
    assert "Intel Xeon Gold 6148 " in one.source and "× 1 socket(s)" in one.source
    two = cpu_power("Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz", logical_cpus=80, sockets=2)
    assert two.known is True and two.tdp_w == pytest.approx(2 * expected)
    assert "× 2 socket(s)" in two.source
    # the 6148F is a different part with its own row: the plain 6148 must not be read as it
    assert "6148F" not in one.source
    zero = cpu_power("Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz", logical_cpus=40, sockets=0)
    assert zero.tdp_w == pytest.approx(expected)  # sockets below 1 count as one


def test_an_amd_name_with_its_core_count_matches_the_table_entry() -> None:
    expected = _tdp_in_table("AMD EPYC 7763")
    power = cpu_power("AMD EPYC 7763 64-Core Processor", logical_cpus=128)
    assert power.known is True and power.tdp_w == pytest.approx(expected)
    assert "AMD EPYC 7763" in power.source


def test_an_unknown_model_falls_back_to_four_watts_per_logical_cpu() -> None:
    power = cpu_power("Intel(R) Xeon(R) Processor", logical_cpus=12, sockets=2)
    assert power.known is False and power.tdp_w == pytest.approx(4.0 * 12)  # sockets do not multiply the fallback
    assert "fallback" in power.source and "12 logical CPUs" in power.source
    assert "Intel(R) Xeon(R) Processor" in power.source
    blank = cpu_power("  ", logical_cpus=0)
    assert blank.known is False and blank.tdp_w == pytest.approx(4.0) and "unknown model" in blank.source


def test_a_custom_table_longest_whole_word_name_wins_and_malformed_rows_are_skipped(tmp_path: Path) -> None:
    table = tmp_path / "cpus.csv"
    table.write_text("Name,TDP\n"
                     "Intel Xeon,100\n"
                     "Intel Xeon Gold,200\n"
                     "Gold 61,999\n"
                     "Broken Part,not-a-number\n"
                     "Short Row\n"
                     ",55\n"
                     "Exact Chip 1,70\n", encoding="utf-8")
    gold = cpu_power("Intel(R) Xeon(R) Gold 6199 CPU @ 3.00GHz", logical_cpus=8, table_path=table)
    assert gold.known is True and gold.tdp_w == 200.0 and "Intel Xeon Gold × 1" in gold.source
    # "gold 61" is not a whole-word match inside "gold 6199"
    plain = cpu_power("Intel(R) Xeon(R) W-9999", logical_cpus=8, table_path=table)
    assert plain.tdp_w == 100.0 and "Intel Xeon × 1" in plain.source
    exact = cpu_power("exact chip 1", logical_cpus=8, table_path=table)
    assert exact.tdp_w == 70.0
    for skipped in ("Broken Part", "Short Row"):
        fallback = cpu_power(skipped, logical_cpus=3, table_path=table)
        assert fallback.known is False and fallback.tdp_w == pytest.approx(12.0), skipped


def test_a_missing_custom_table_is_a_table_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(TableError, match="nowhere.csv"):
        cpu_power("Intel Xeon", logical_cpus=4, table_path=tmp_path / "nowhere.csv")


# ----------------------------------------------------------- grid intensity


def test_world_is_the_iea_world_average() -> None:
    world = grid_intensity("WORLD")
    assert world.g_per_kwh == pytest.approx(float(_private_infra("carbon_intensity_per_source.json")["world_average"]))
    assert "world average" in world.source
    assert grid_intensity(" world ").g_per_kwh == world.g_per_kwh


def test_a_country_by_alpha2_alpha3_or_lower_case_is_its_energy_mix_figure() -> None:
    entry = _private_infra("global_energy_mix.json")["DEU"]
    figures = [grid_intensity(code) for code in ("DE", "DEU", "de", "deu")]
    assert [f.g_per_kwh for f in figures] == [pytest.approx(float(entry["carbon_intensity"]))] * 4
    for figure in figures:
        assert "global_energy_mix.json" in figure.source
        assert str(entry["year"]) in figure.source and str(entry["country_name"]) in figure.source


def test_a_us_state_is_egrid_converted_from_pounds_per_mwh() -> None:
    states = _private_infra("2023/usa_emissions.json")
    california = grid_intensity("US-CA")
    assert california.g_per_kwh == pytest.approx(float(states["california"]["emissions"]) * 0.45359237)
    assert G_PER_KWH_PER_LB_PER_MWH == 0.45359237
    assert "california" in california.source and "usa_emissions.json" in california.source
    assert grid_intensity("us-ca").g_per_kwh == california.g_per_kwh


@pytest.mark.parametrize("region", ["XX", "US-ZZ", "ZZZ", "Germany"])
def test_an_unknown_region_is_a_table_error_naming_it(region: str) -> None:
    with pytest.raises(TableError) as caught:
        grid_intensity(region)
    assert repr(region) in str(caught.value)


def test_a_corrupt_table_is_a_table_error_naming_the_file(tmp_path: Path) -> None:
    infra = tmp_path / "private_infra"
    infra.mkdir()
    (infra / "global_energy_mix.json").write_text('{"DEU": {"carbon_intensity": ', encoding="utf-8")
    with pytest.raises(TableError, match="global_energy_mix.json"):
        grid_intensity("DEU", root=tmp_path)
    with pytest.raises(TableError, match="carbon_intensity_per_source.json"):  # missing, not corrupt
        grid_intensity("WORLD", root=tmp_path)


def test_a_custom_root_is_read_instead_of_codecarbons(tmp_path: Path) -> None:
    infra = tmp_path / "private_infra"
    (infra / "2023").mkdir(parents=True)
    (infra / "global_energy_mix.json").write_text(json.dumps(
        {"FRA": {"carbon_intensity": 55.5, "country_name": "France", "year": 2099}}), encoding="utf-8")
    (infra / "2023" / "usa_emissions.json").write_text(json.dumps(
        {"_source": {"year": 2099}, "vermont": {"emissions": 100.0, "regionCode": "VT"}}), encoding="utf-8")
    france = grid_intensity("FR", root=tmp_path)
    assert france.g_per_kwh == 55.5 and france.source.endswith("France 2099")
    vermont = grid_intensity("US-VT", root=tmp_path)
    assert vermont.g_per_kwh == pytest.approx(45.359237) and "eGRID 2099" in vermont.source
    with pytest.raises(TableError, match="'DE'"):
        grid_intensity("DE", root=tmp_path)


def test_a_bare_number_in_the_table_never_matches_a_model_name() -> None:
    power = cpu_power("Intel(R) Celeron(R) CPU 460 @ 1.80GHz", 2)  # the table has a row named just "460"
    assert not power.known and power.tdp_w == pytest.approx(8.0)
