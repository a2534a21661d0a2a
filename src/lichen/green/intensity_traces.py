"""Carbon-intensity traces from CSV files: any header that names a time and an intensity column.

``read_trace(path)`` reads a file such as an Electricity Maps or WattTime
export, or one written by hand::

    datetime,carbon_intensity_g_per_kwh
    2026-12-04T00:00:00Z,212
    2026-12-04T00:30:00+01:00,198.5
    2026-12-04 01:00,201          # no zone: UTC

* the **time column** is the first whose name contains ``time``, ``date``,
  ``period`` or ``start``; the **intensity column** the first other one whose
  name contains ``intensity``, ``carbon``, ``co2`` or ``emission`` (so
  ``Datetime (UTC)`` and ``Carbon Intensity gCO₂eq/kWh (LCA)`` are found);
  the delimiter is sniffed (comma, semicolon or tab);
* times are ISO 8601 with or without a zone (UTC when none), or Unix
  seconds; steps may be irregular (15 or 30 minutes, hourly), but must
  increase;
* every bad row is an error naming ``file:line`` and what is wrong; nothing
  is read half.

:meth:`IntensityTrace.at` interpolates linearly between two rows only when
they are at most ``max_gap_s`` apart (default: twice the trace's median step,
at least 1 hour and at most 3 hours); a wider gap is refused with the two
lines around it.
Intensity is location-based, in gCO₂e/kWh, as the SCI requires.
"""

from __future__ import annotations

import bisect
import csv
import io
import re
import statistics
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from lichen.errors import DataError

TIME_NAMES = re.compile(r"time|date|period|start", re.I)
INTENSITY_NAMES = re.compile(r"intensity|carbon|co2|co₂|emission", re.I)
MAX_DEFAULT_GAP_S = 3 * 3600.0
MIN_DEFAULT_GAP_S = 3600.0


@dataclass(frozen=True)
class IntensityTrace:
    """Intensity (gCO₂e/kWh) at increasing times (Unix seconds), with the line each came from."""

    times_s: tuple[float, ...]
    values: tuple[float, ...]
    lines: tuple[int, ...]
    source: str
    """where it came from (a file name): labels every figure computed from it"""

    @property
    def median_step_s(self) -> float:
        steps = [b - a for a, b in zip(self.times_s, self.times_s[1:], strict=False)]
        return statistics.median(steps) if steps else 0.0

    def default_max_gap_s(self) -> float:
        """Twice the median step, but at least an hour (so a 15-minute trace with an hourly stretch is read)
        and at most three."""
        if len(self.times_s) < 2:
            return 0.0
        return min(MAX_DEFAULT_GAP_S, max(MIN_DEFAULT_GAP_S, 2 * self.median_step_s))

    def span_problem(self, start_s: float, end_s: float) -> str | None:
        """Why the trace cannot be read over ``[start_s, end_s]`` (as far as it reaches), or None: a gap wider
        than the bound inside it, or, at ``start_s``'s end of the trace, nothing recent (its last row before
        the span's end is older than the bound)."""
        bound = self.default_max_gap_s()
        for line_a, line_b, seconds in self.gaps():
            i = self.lines.index(line_a)
            if self.times_s[i + 1] > start_s and self.times_s[i] < end_s:
                return (f"a gap of {seconds / 60:g} min between lines {line_a} and {line_b} is wider than "
                        f"{bound / 60:g} min, the most that is interpolated")
        return None

    def gaps(self, max_gap_s: float | None = None) -> list[tuple[int, int, float]]:
        """Every gap wider than the bound: (line before, line after, seconds)."""
        bound = self.default_max_gap_s() if max_gap_s is None else max_gap_s
        return [(self.lines[i], self.lines[i + 1], b - a)
                for i, (a, b) in enumerate(zip(self.times_s, self.times_s[1:], strict=False)) if b - a > bound]

    def at(self, t_s: float, max_gap_s: float | None = None) -> float:
        """The intensity at ``t_s``: a row's value, or linear between the two rows around it when they are at
        most ``max_gap_s`` apart; a time outside the trace or inside a wider gap is an error saying where."""
        times = self.times_s
        gap_s = self.default_max_gap_s() if max_gap_s is None else max_gap_s
        if not times or t_s < times[0] or t_s > times[-1]:
            span = f"{_iso(times[0])} to {_iso(times[-1])}" if times else "no rows"
            raise DataError(f"{_iso(t_s)} is outside the trace ({span})", where=self.source)
        i = bisect.bisect_left(times, t_s)
        if times[i] == t_s:
            return self.values[i]
        before, after = i - 1, i
        if times[after] - times[before] > gap_s:
            raise DataError(f"no intensity at {_iso(t_s)}: a gap of {(times[after] - times[before]) / 60:g} min "
                            f"between lines {self.lines[before]} and {self.lines[after]} is wider than "
                            f"{gap_s / 60:g} min, the most that is interpolated", where=self.source)
        share = (t_s - times[before]) / (times[after] - times[before])
        return self.values[before] + share * (self.values[after] - self.values[before])

    def mean(self, start_s: float, end_s: float, max_gap_s: float | None = None) -> float:
        """The time-weighted mean intensity over ``[start_s, end_s]`` (trapezoids between the rows)."""
        if end_s <= start_s:
            return self.at(start_s, max_gap_s)
        points = [start_s, *(t for t in self.times_s if start_s < t < end_s), end_s]
        values = [self.at(t, max_gap_s) for t in points]
        area = sum((b - a) * (va + vb) / 2 for a, b, va, vb in zip(points, points[1:], values, values[1:],
                                                                      strict=False))
        return area / (end_s - start_s)


def _iso(t_s: float) -> str:
    return datetime.fromtimestamp(t_s, UTC).isoformat().replace("+00:00", "Z")


def parse_time(text: str) -> float:
    """Unix seconds from ISO 8601 (UTC when it names no zone) or from a number of Unix seconds."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    moment = datetime.fromisoformat(text.replace(" ", "T", 1) if "T" not in text else text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _columns(header: list[str], where: str) -> tuple[int, int]:
    time_col = next((i for i, name in enumerate(header) if TIME_NAMES.search(name)), None)
    value_col = next((i for i, name in enumerate(header) if i != time_col and INTENSITY_NAMES.search(name)), None)
    if time_col is None or value_col is None:
        missing = "time column (a name with time, date, period or start)" if time_col is None else \
            "intensity column (a name with intensity, carbon, co2 or emission)"
        raise DataError(f"the header {header!r} has no {missing}", where=f"{where}:1")
    return time_col, value_col


def parse_trace(text: str, source: str) -> IntensityTrace:
    """A trace from CSV text; ``source`` names it in errors (``source:line``) and in every figure."""
    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        raise DataError("the file is empty: expected a header and rows", where=source)
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(lines[first], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    rows = csv.reader(io.StringIO(text), dialect)
    header: list[str] | None = None
    time_col = value_col = 0
    times: list[float] = []
    values: list[float] = []
    numbers: list[int] = []
    for row in rows:
        line = rows.line_num
        if not row or all(not cell.strip() for cell in row) or row[0].lstrip().startswith("#"):
            continue
        if header is None:
            header = [cell.strip() for cell in row]
            time_col, value_col = _columns(header, source)
            continue
        where = f"{source}:{line}"
        if max(time_col, value_col) >= len(row):
            raise DataError(f"{len(row)} fields, but the header names {len(header)}", where=where)
        raw_time, raw_value = row[time_col].strip(), row[value_col].split("#")[0].strip()
        try:
            t_s = parse_time(raw_time)
        except ValueError:
            raise DataError(f"{header[time_col]}: {raw_time!r} is not an ISO 8601 time or Unix seconds",
                            where=where) from None
        try:
            value = float(raw_value)
        except ValueError:
            raise DataError(f"{header[value_col]}: {raw_value!r} is not a number", where=where) from None
        if not 0 <= value < 1e5 or value != value:
            raise DataError(f"{header[value_col]}: {value:g} gCO2e/kWh is not an intensity (0 to 100000)",
                            where=where)
        if times and t_s <= times[-1]:
            raise DataError(f"{header[time_col]}: {raw_time} is not after line {numbers[-1]}'s "
                            f"{_iso(times[-1])}: rows must be in increasing time", where=where)
        times.append(t_s)
        values.append(value)
        numbers.append(line)
    if not times:
        raise DataError("no rows after the header", where=source)
    return IntensityTrace(tuple(times), tuple(values), tuple(numbers), source)


def read_trace(path: str | Path) -> IntensityTrace:
    """A trace from a CSV file (see the module docs); errors name ``file:line``."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read the intensity trace: {exc}", where=str(source)) from None
    return parse_trace(text, str(source))
