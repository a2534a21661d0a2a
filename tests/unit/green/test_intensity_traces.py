"""Carbon-intensity CSV traces (lichen.green.intensity_traces): headers found by name, ISO times with and without
a zone, irregular steps, interpolation only within the gap bound, and a file:line error for every bad row."""

from __future__ import annotations

from pathlib import Path

import pytest

from lichen.errors import DataError
from lichen.green.intensity_traces import parse_time, parse_trace, read_trace

T0 = 1_796_342_400.0  # 2026-12-04T00:00:00Z


def test_an_electricity_maps_style_export_with_a_bom_and_semicolons(tmp_path: Path) -> None:
    path = tmp_path / "de.csv"
    path.write_text("\ufeffDatetime (UTC);Zone Id;Carbon Intensity gCO₂eq/kWh (LCA)\n"
                    "2026-12-04 00:00:00;DE;300\n2026-12-04 00:15:00;DE;310\n"
                    "2026-12-04 00:45:00;DE;290\n2026-12-04 01:45:00;DE;250\n", encoding="utf-8")
    trace = read_trace(path)
    assert trace.times_s == (T0, T0 + 900, T0 + 2700, T0 + 6300) and trace.values == (300, 310, 290, 250)
    assert trace.lines == (2, 3, 4, 5) and trace.source == str(path)
    assert trace.at(T0 + 900) == 310 and trace.at(T0 + 1800) == pytest.approx(300.0)  # halfway 310 -> 290
    # irregular steps (15, 30, 60 min): the median is 30 min, so gaps up to 60 min are interpolated
    assert trace.at(T0 + 4500) == pytest.approx(270.0)


def test_times_with_and_without_zones_and_unix_seconds() -> None:
    assert parse_time("2026-12-04T00:00:00Z") == T0
    assert parse_time("2026-12-04T01:00:00+01:00") == T0
    assert parse_time("2026-12-04 00:00") == T0  # no zone: UTC
    assert parse_time(str(int(T0))) == T0
    trace = parse_trace("time,intensity\n2026-12-04T00:00Z,100\n2026-12-04T02:00:00+01:00,200\n", "x.csv")
    assert trace.times_s == (T0, T0 + 3600)


def test_a_gap_wider_than_the_bound_is_refused_with_its_lines() -> None:
    text = ("timestamp,carbon_g_per_kwh\n" + "".join(f"{int(T0 + 1800 * i)},{100 + i}\n" for i in range(4))
            + f"{int(T0 + 1800 * 3 + 4 * 3600)},50\n")
    trace = parse_trace(text, "gappy.csv")
    assert trace.at(T0 + 900) == pytest.approx(100.5)
    with pytest.raises(DataError) as err:
        trace.at(T0 + 1800 * 3 + 3600)
    assert str(err.value) == ("gappy.csv: no intensity at 2026-12-04T02:30:00Z: a gap of 240 min between lines 5 "
                              "and 6 is wider than 60 min, the most that is interpolated")
    assert trace.at(T0 + 1800 * 3 + 3600, max_gap_s=5 * 3600) == pytest.approx(103 - 53 / 4)
    with pytest.raises(DataError, match="is outside the trace"):
        trace.at(T0 - 1)


def test_the_mean_over_a_window_weighs_time() -> None:
    trace = parse_trace("time,intensity\n0,100\n3600,300\n7200,300\n", "m.csv")
    assert trace.mean(0, 7200) == pytest.approx((200 * 3600 + 300 * 3600) / 7200)
    assert trace.mean(1800, 1800) == pytest.approx(200.0)


@pytest.mark.parametrize(("text", "error"), [
    ("", "e.csv: the file is empty: expected a header and rows"),
    ("when,value\n0,1\n", "e.csv:1: the header ['when', 'value'] has no time column"),
    ("time,price\n0,1\n", "e.csv:1: the header ['time', 'price'] has no intensity column"),
    ("time,intensity\n0,100\nyesterday,100\n", "e.csv:3: time: 'yesterday' is not an ISO 8601 time or Unix seconds"),
    ("time,intensity\n0,100\n60,lots\n", "e.csv:3: intensity: 'lots' is not a number"),
    ("time,intensity\n0,100\n60,-5\n", "e.csv:3: intensity: -5 gCO2e/kWh is not an intensity (0 to 100000)"),
    ("time,intensity\n0,100\n0,90\n", "e.csv:3: time: 0 is not after line 2's 1970-01-01T00:00:00Z"),
    ("time,intensity\n0,100\n60\n", "e.csv:3: 1 fields, but the header names 2"),
    ("time,intensity\n", "e.csv: no rows after the header"),
])
def test_every_bad_row_is_an_error_naming_its_line(text: str, error: str) -> None:
    with pytest.raises(DataError) as err:
        parse_trace(text, "e.csv")
    assert str(err.value).startswith(error), str(err.value)


def test_an_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read the intensity trace"):
        read_trace(tmp_path / "missing.csv")


def test_a_15_minute_trace_with_an_hourly_stretch_is_read_and_gaps_lists_what_is_not() -> None:
    times = [T0 + 900 * i for i in range(8)] + [T0 + 900 * 7 + 3600, T0 + 900 * 7 + 3600 + 4 * 3600]
    text = "datetime,carbon_intensity\n" + "".join(f"{int(t)},{200 + i}\n" for i, t in enumerate(times))
    trace = parse_trace(text, "mixed.csv")
    assert trace.default_max_gap_s() == 3600  # twice the 15 min median, raised to an hour
    assert trace.at(T0 + 900 * 7 + 1800) == pytest.approx(207.5)  # inside the hourly stretch
    assert trace.gaps() == [(10, 11, 4 * 3600.0)]  # lines: the header is line 1
    with pytest.raises(DataError, match="between lines 10 and 11"):
        trace.at(T0 + 900 * 7 + 3600 + 3600)

