"""Reading and validating ratings: MovieLens ``u.data`` (tab), ``ratings.dat``
(``::``), ``ratings.csv`` (header), a generic CSV with a column mapping, and
the JSON-lines events log the ``events`` service appends to.

Every row is validated. A bad row is either fatal (``on_bad_rows="fail"``,
the default: one :class:`lichen.DataError` naming the file, the first bad
line and how many more there are) or skipped and reported with its line
number (``"skip"``). Nothing is dropped silently. Duplicate (user, item)
pairs are removed (the latest event wins) and reported with both line numbers,
or are fatal with ``on_duplicates="fail"``.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from lichen import DataError

from recsys.interactions import Interactions

FORMATS = ("auto", "udata", "dat", "csv")
DELIMITERS = {"udata": "\t", "dat": "::"}
MOVIELENS_CSV_COLUMNS = {"user": "userId", "item": "movieId", "rating": "rating", "timestamp": "timestamp"}
FIELDS = ("user", "item", "rating", "timestamp")
MAX_LISTED = 5


@dataclass(frozen=True)
class BadRow:
    source: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.reason}"


@dataclass(frozen=True)
class Duplicate:
    source: str
    line: int
    kept_source: str
    kept_line: int
    user: int
    item: int

    def __str__(self) -> str:
        return (f"{self.source}:{self.line}: duplicate (user {self.user}, item {self.item}) "
                f"removed; kept {self.kept_source}:{self.kept_line}")


@dataclass
class Table:
    """Rows read from one or more sources, each remembering where it came from."""

    users: list[int] = field(default_factory=list)
    items: list[int] = field(default_factory=list)
    ratings: list[float] = field(default_factory=list)
    timestamps: list[int] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    bad_rows: list[BadRow] = field(default_factory=list)
    formats: dict[str, str] = field(default_factory=dict)

    def add(self, source: str, line: int, user: int, item: int, rating: float, timestamp: int) -> None:
        self.users.append(user)
        self.items.append(item)
        self.ratings.append(rating)
        self.timestamps.append(timestamp)
        self.sources.append(source)
        self.lines.append(line)

    def __len__(self) -> int:
        return len(self.users)


class RowError(ValueError):
    """One row failed validation (the message says why)."""


def parse_columns(text: str | None) -> dict[str, str] | None:
    """``user=uid,item=movie,rating=score,timestamp=ts`` → mapping (user and item required)."""
    if not text:
        return None
    mapping: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not value:
            raise DataError(f"--columns: expected FIELD=COLUMN, got {part.strip()!r}", where="--columns")
        if key not in FIELDS:
            raise DataError(f"--columns: unknown field {key!r}; expected {', '.join(FIELDS)}", where="--columns")
        mapping[key] = value
    for needed in ("user", "item"):
        if needed not in mapping:
            raise DataError(f"--columns: missing {needed}=COLUMN", where="--columns")
    return mapping


def detect_format(path: Path, first_line: str) -> str:
    name = path.name.lower()
    if name.endswith(".data"):
        return "udata"
    if name.endswith(".dat") or "::" in first_line:
        return "dat"
    if name.endswith(".csv"):
        return "csv"
    if "\t" in first_line:
        return "udata"
    if "," in first_line:
        return "csv"
    return "udata"


def _guess_delimiter(line: str, expected: str) -> str | None:
    for candidate in ("\t", "::", ",", ";", "|", " "):
        if candidate != expected and len(line.split(candidate)) >= 3:
            return candidate
    return None


def _name(delimiter: str) -> str:
    return {"\t": "tab", " ": "space"}.get(delimiter, repr(delimiter))


def _int_field(value: str, what: str) -> int:
    text = value.strip()
    try:
        number = int(text)
    except ValueError:
        raise RowError(f"{what} {text!r} is not an integer") from None
    if number < 0:
        raise RowError(f"{what} {number} is negative")
    return number


def _rating(value: str | float | None, rating_range: tuple[float, float]) -> float:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise RowError("rating is empty")
    try:
        rating = float(value)
    except (TypeError, ValueError):
        raise RowError(f"rating {str(value).strip()!r} is not a number") from None
    low, high = rating_range
    if not math.isfinite(rating) or not low <= rating <= high:
        raise RowError(f"rating {rating:g} is outside {low:g}..{high:g}")
    return rating


def _timestamp(value: str | float | None) -> int:
    if value is None or (isinstance(value, str) and not value.strip()):
        return 0
    try:
        stamp = float(value)
    except (TypeError, ValueError):
        raise RowError(f"timestamp {str(value).strip()!r} is not a number") from None
    if not math.isfinite(stamp) or stamp < 0:
        raise RowError(f"timestamp {value!r} is not a valid epoch time")
    return int(stamp)


def read_ratings(
    path: str | Path,
    *,
    fmt: str = "auto",
    columns: dict[str, str] | None = None,
    delimiter: str | None = None,
    rating_range: tuple[float, float] = (0.5, 5.0),
    table: Table | None = None,
) -> Table:
    """Read one ratings file into ``table`` (a new one by default); bad rows
    are collected in ``table.bad_rows``, never dropped without a record."""
    path = Path(path)
    table = table if table is not None else Table()
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}", where=str(path))
    if not path.is_file():
        raise DataError("ratings file not found", where=str(path))
    source = str(path)
    with path.open("r", encoding="utf-8-sig", errors="replace", newline="") as handle:  # -sig: drop a BOM
        lines = handle.read().splitlines()
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        raise DataError("empty file: no ratings to read", where=f"{source}:1")
    if fmt == "auto":
        fmt = "csv" if columns else detect_format(path, lines[first])
    table.formats[source] = fmt
    if fmt == "csv":
        _read_csv(lines, first, source, columns or MOVIELENS_CSV_COLUMNS, delimiter or ",", rating_range, table)
    else:
        _read_delimited(lines, first, source, fmt, delimiter or DELIMITERS[fmt], rating_range, table)
    return table


def _read_delimited(lines, first, source, fmt, delimiter, rating_range, table) -> None:
    layout = "user{0}item{0}rating{0}timestamp".format("<TAB>" if delimiter == "\t" else delimiter)
    head = lines[first].split(delimiter)
    if len(head) < 3:
        other = _guess_delimiter(lines[first], delimiter)
        hint = f"; the line looks {_name(other)}-separated (pass --format/--delimiter to match)" if other else ""
        raise DataError(
            f"wrong delimiter: expected {_name(delimiter)}-separated fields ({layout}), "
            f"found {len(head)} field{'s' if len(head) != 1 else ''}{hint}",
            where=f"{source}:{first + 1}",
        )
    before = len(table)
    for number, line in enumerate(lines[first:], start=first + 1):
        if not line.strip():
            continue
        parts = line.split(delimiter)
        try:
            if len(parts) not in (3, 4):
                raise RowError(f"expected 4 fields ({layout}), found {len(parts)}")
            table.add(source, number, _int_field(parts[0], "user id"), _int_field(parts[1], "item id"),
                      _rating(parts[2], rating_range), _timestamp(parts[3] if len(parts) == 4 else None))
        except RowError as err:
            table.bad_rows.append(BadRow(source, number, str(err)))
    if len(table) == before and not table.bad_rows:
        raise DataError("empty file: no ratings to read", where=f"{source}:1")


def _read_csv(lines, first, source, columns, delimiter, rating_range, table) -> None:
    header = next(csv.reader([lines[first]], delimiter=delimiter))
    header = [h.strip() for h in header]
    if len(header) == 1:
        other = _guess_delimiter(lines[first], delimiter)
        if other:
            raise DataError(
                f"wrong delimiter: the header has one column with {_name(delimiter)} as delimiter, "
                f"but looks {_name(other)}-separated (pass --delimiter or --format to match)",
                where=f"{source}:{first + 1}",
            )
    positions: dict[str, int] = {}
    for key, column in columns.items():
        if column not in header:
            raise DataError(
                f"missing column {column!r} for {key} (header has: {', '.join(header)}); "
                "map columns with --columns user=..,item=..,rating=..,timestamp=..",
                where=f"{source}:{first + 1}",
            )
        positions[key] = header.index(column)
    width = len(header)
    rows = csv.reader(lines[first + 1:], delimiter=delimiter)
    seen_any = False
    for number, parts in enumerate(rows, start=first + 2):
        if not parts or not "".join(parts).strip():
            continue
        seen_any = True
        try:
            if len(parts) != width:
                raise RowError(f"expected {width} columns ({', '.join(header)}), found {len(parts)}")
            rating = _rating(parts[positions["rating"]], rating_range) if "rating" in positions else 1.0
            stamp = _timestamp(parts[positions["timestamp"]]) if "timestamp" in positions else 0
            table.add(source, number, _int_field(parts[positions["user"]], "user id"),
                      _int_field(parts[positions["item"]], "item id"), rating, stamp)
        except RowError as err:
            table.bad_rows.append(BadRow(source, number, str(err)))
    if not seen_any:
        raise DataError("empty file: the header has no rows under it", where=f"{source}:{first + 1}")


def read_events(directory: str | Path, *, rating_range: tuple[float, float] = (0.5, 5.0),
                table: Table | None = None) -> Table:
    """Read the events log (``*.jsonl``; one JSON object a line with
    ``user_id``, ``item_id``, optional ``rating``, ``timestamp``/``ts`` and
    ``event_id``). A repeated ``event_id`` is the same event delivered twice
    and is counted once."""
    table = table if table is not None else Table()
    seen_ids: set[str] = set()
    for path in sorted(Path(directory).glob("*.jsonl")):
        source = str(path)
        table.formats[source] = "events"
        with path.open("r", encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    try:
                        event = json.loads(line)
                    except json.JSONDecodeError as err:
                        # A torn final line (writer killed mid-append) is reported like any bad row.
                        raise RowError(f"not valid JSON ({err.msg})") from None
                    if not isinstance(event, dict):
                        raise RowError("expected a JSON object")
                    event_id = event.get("event_id")
                    if event_id is not None:
                        if str(event_id) in seen_ids:
                            continue
                        seen_ids.add(str(event_id))
                    for key in ("user_id", "item_id"):
                        if key not in event:
                            raise RowError(f"missing field {key!r}")
                    rating = event.get("rating", event.get("value"))
                    table.add(
                        source, number,
                        _int_field(str(event["user_id"]), "user id"),
                        _int_field(str(event["item_id"]), "item id"),
                        _rating(rating if rating is not None else min(max(1.0, rating_range[0]), rating_range[1]),
                                rating_range),
                        _timestamp(event.get("timestamp", event.get("ts"))),
                    )
                except RowError as err:
                    table.bad_rows.append(BadRow(source, number, str(err)))
    return table


def check_bad_rows(table: Table, on_bad_rows: str) -> None:
    """Raise one DataError for the bad rows when the policy is ``fail``."""
    if not table.bad_rows or on_bad_rows == "skip":
        return
    first = table.bad_rows[0]
    more = len(table.bad_rows) - 1
    listed = "; ".join(f"line {b.line}: {b.reason}" for b in table.bad_rows[1:MAX_LISTED])
    tail = f" ({more} more bad row{'s' if more != 1 else ''}: {listed}{'; ...' if more >= MAX_LISTED else ''})" if more else ""
    raise DataError(f"{first.reason}{tail}; pass --on-bad-rows skip to skip and report them",
                    where=f"{first.source}:{first.line}")


def deduplicate(table: Table, on_duplicates: str = "remove") -> tuple[Interactions, list[Duplicate]]:
    """Keep one row per (user, item): the latest timestamp, then the last read."""
    n = len(table)
    users = np.asarray(table.users, np.int64)
    items = np.asarray(table.items, np.int64)
    stamps = np.asarray(table.timestamps, np.int64)
    order = np.lexsort((np.arange(n), stamps, items, users))  # by user, item, time, read order
    u, i = users[order], items[order]
    last_of_group = np.ones(n, bool)
    if n:
        last_of_group[:-1] = (u[1:] != u[:-1]) | (i[1:] != i[:-1])
    keep = np.sort(order[last_of_group])
    duplicates: list[Duplicate] = []
    if not last_of_group.all():
        # Map each dropped row to the kept row of its group.
        group_end = np.flatnonzero(last_of_group)
        owner = group_end[np.searchsorted(group_end, np.arange(n))]
        for pos in np.flatnonzero(~last_of_group):
            row, kept = int(order[pos]), int(order[owner[pos]])
            duplicates.append(Duplicate(table.sources[row], table.lines[row], table.sources[kept],
                                        table.lines[kept], int(users[row]), int(items[row])))
        duplicates.sort(key=lambda d: (d.source, d.line))
    if duplicates and on_duplicates == "fail":
        first = duplicates[0]
        a, b = sorted([(first.source, first.line), (first.kept_source, first.kept_line)])
        raise DataError(
            f"duplicate event: user {first.user}, item {first.item} also at {a[0]}:{a[1]} "
            f"({len(duplicates)} duplicate row{'s' if len(duplicates) != 1 else ''} in all); "
            "pass --on-duplicates remove to keep the latest",
            where=f"{b[0]}:{b[1]}",
        )
    data = Interactions.from_arrays(users[keep], items[keep], np.asarray(table.ratings, np.float32)[keep],
                                    stamps[keep])
    return data, duplicates
