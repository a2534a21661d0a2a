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
import io
import itertools
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
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


class Table:
    """Rows read from one or more sources, each remembering where it came from (source and line).

    Held as numpy columns, a block at a time: reading 20M rows never makes 20M Python objects.
    Rows added one at a time (the events log, a block that needs line-by-line reading) are
    buffered and become a block of their own."""

    _COLUMNS = (("users", np.int64), ("items", np.int64), ("ratings", np.float32), ("timestamps", np.int64),
                ("source_index", np.int32), ("lines", np.int64))

    def __init__(self) -> None:
        self.bad_rows: list[BadRow] = []
        self.formats: dict[str, str] = {}
        self._sources: list[str] = []
        self._source_ids: dict[str, int] = {}
        self._parts: dict[str, list[np.ndarray]] = {column: [] for column, _ in self._COLUMNS}
        self._pending: tuple[list, ...] = tuple([] for _ in self._COLUMNS)
        self._length = 0

    def _source_id(self, source: str) -> int:
        if source not in self._source_ids:
            self._source_ids[source] = len(self._sources)
            self._sources.append(source)
        return self._source_ids[source]

    def add(self, source: str, line: int, user: int, item: int, rating: float, timestamp: int) -> None:
        for column, value in zip(self._pending, (user, item, rating, timestamp, self._source_id(source), line)):
            column.append(value)
        self._length += 1

    def extend(self, source: str, lines: np.ndarray, users: np.ndarray, items: np.ndarray, ratings: np.ndarray,
               timestamps: np.ndarray) -> None:
        """A block of rows at once (equal-length arrays)."""
        self._flush()
        count = len(users)
        if not count:
            return
        source_index = np.full(count, self._source_id(source), np.int32)
        for (column, dtype), values in zip(self._COLUMNS, (users, items, ratings, timestamps, source_index, lines)):
            self._parts[column].append(np.asarray(values, dtype))
        self._length += count

    def _flush(self) -> None:
        if self._pending[0]:
            for (column, dtype), values in zip(self._COLUMNS, self._pending):
                self._parts[column].append(np.asarray(values, dtype))
                values.clear()

    def _column(self, name: str) -> np.ndarray:
        """One column whole. Its blocks are joined once and let go, a column at a time, so joining
        holds at most one column twice."""
        self._flush()
        parts = self._parts[name]
        if len(parts) != 1:
            joined = np.concatenate(parts) if parts else np.zeros(0, dict(self._COLUMNS)[name])
            parts.clear()
            parts.append(joined)
        return parts[0]

    users = property(lambda self: self._column("users"))
    items = property(lambda self: self._column("items"))
    ratings = property(lambda self: self._column("ratings"))
    timestamps = property(lambda self: self._column("timestamps"))
    lines = property(lambda self: self._column("lines"))

    def source_of(self, row: int) -> str:
        return self._sources[int(self._column("source_index")[row])]

    def __len__(self) -> int:
        return self._length


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


BLOCK_BYTES = 16 << 20
"""Ratings files are read a block of about this many bytes at a time (cut at a line end)."""


def _blocks(handle, block_bytes: int) -> Iterator[bytes]:
    """The file's bytes in blocks that end at a line end (the last one may not), a leading BOM removed."""
    rest = b""
    first = True
    while True:
        chunk = handle.read(block_bytes)
        if first:
            chunk = chunk.removeprefix(b"\xef\xbb\xbf")
            first = False
        if not chunk:
            if rest:
                yield rest
            return
        data = rest + chunk if rest else chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            rest = data
            continue
        yield data[: cut + 1]
        rest = data[cut + 1:]


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def read_ratings(
    path: str | Path,
    *,
    fmt: str = "auto",
    columns: dict[str, str] | None = None,
    delimiter: str | None = None,
    rating_range: tuple[float, float] = (0.5, 5.0),
    table: Table | None = None,
    block_bytes: int = BLOCK_BYTES,
) -> Table:
    """Read one ratings file into ``table`` (a new one by default); bad rows
    are collected in ``table.bad_rows``, never dropped without a record.

    The file streams a block at a time. A block is parsed at C speed (pyarrow's CSV reader, then
    vectorised checks); a block with anything the fast path does not accept (a bad value, a
    blank line, a stray column) is read again line by line, which names each bad row's line."""
    path = Path(path)
    table = table if table is not None else Table()
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}", where=str(path))
    if not path.is_file():
        raise DataError("ratings file not found", where=str(path))
    source = str(path)
    with path.open("rb") as handle:
        blocks = _blocks(handle, block_bytes)
        # the first line with content (the header of a CSV) decides the format and the layout
        line_number, block, offset = 0, b"", 0
        for block in blocks:
            offset, skipped, text = _first_content(block)
            line_number += skipped
            if text is not None:
                break
        else:
            raise DataError("empty file: no ratings to read", where=f"{source}:1")
        if fmt == "auto":
            fmt = "csv" if columns else detect_format(path, text)
        table.formats[source] = fmt
        if fmt == "csv":
            reader = _CsvReader(source, text, line_number + 1, columns or MOVIELENS_CSV_COLUMNS, delimiter or ",",
                                rating_range)
            offset = block.find(b"\n", offset) + 1 or len(block)  # rows start under the header
            line_number += 1
        else:
            reader = _DelimitedReader(source, text, line_number + 1, delimiter or DELIMITERS[fmt], rating_range)
        before, bad_before = len(table), len(table.bad_rows)
        rest = block[offset:]
        for data in itertools.chain([rest] if rest else [], blocks):
            line_number += reader.read_block(data, line_number + 1, table)
    if len(table) == before and len(table.bad_rows) == bad_before:
        if fmt == "csv":
            raise DataError("empty file: the header has no rows under it", where=f"{source}:{reader.header_line}")
        raise DataError("empty file: no ratings to read", where=f"{source}:1")
    return table


def _first_content(block: bytes) -> tuple[int, int, str | None]:
    """(byte offset, lines before it, text) of the first line of ``block`` that is not blank."""
    position, skipped = 0, 0
    while position < len(block):
        end = block.find(b"\n", position)
        end = len(block) if end < 0 else end
        text = _decode(block[position:end]).rstrip("\r")
        if text.strip():
            return position, skipped, text
        position, skipped = end + 1, skipped + 1
    return position, skipped, None


def _line_count(data: bytes) -> int:
    return data.count(b"\n") + (0 if data.endswith(b"\n") else 1)


class _BlockReader:
    """One file's rows: ``read_block`` parses a block fast if it can, else line by line."""

    source: str
    rating_range: tuple[float, float]
    _arrow: dict[str, object] | None = None  # pyarrow's options for the fast path, or None for none

    def read_block(self, data: bytes, first_line: int, table: Table) -> int:
        """Rows of ``data`` (its first line is ``first_line``) into ``table``; returns the lines it held."""
        count = _line_count(data)
        fast = self._fast(data, count) if self._arrow is not None else None
        if fast is not None:
            table.extend(self.source, np.arange(first_line, first_line + count, dtype=np.int64), *fast)
            return count
        lines = _decode(data).splitlines()
        for number, line in enumerate(lines, start=first_line):
            if line.strip():
                self._read_line(line, number, table)
        return len(lines)

    def _read_line(self, line: str, number: int, table: Table) -> None:
        raise NotImplementedError

    def _fast(self, data: bytes, count: int) -> tuple[np.ndarray, ...] | None:
        """(users, items, ratings, timestamps) of every line of ``data``, or None if any line is not a clean row."""
        import pyarrow
        import pyarrow.csv

        try:
            parsed = pyarrow.csv.read_csv(io.BytesIO(data), **self._arrow)
        except (pyarrow.ArrowInvalid, pyarrow.ArrowNotImplementedError):
            return None
        if parsed.num_rows != count or any(column.null_count for column in parsed.columns):
            return None  # a blank line, an empty field, a stray carriage return: read it line by line
        users = parsed.column("user").to_numpy()
        items = parsed.column("item").to_numpy()
        if len(users) and (users.min() < 0 or items.min() < 0):
            return None
        low, high = self.rating_range
        if "rating" in parsed.column_names:
            ratings = parsed.column("rating").to_numpy()
            if not ((ratings >= low) & (ratings <= high)).all():  # NaN fails both
                return None
        else:
            ratings = np.ones(count, np.float32)
        if "timestamp" in parsed.column_names:
            stamps = parsed.column("timestamp").to_numpy()
            if not ((stamps >= 0) & np.isfinite(stamps)).all():
                return None
            stamps = stamps.astype(np.int64)  # truncated, as int(float(text))
        else:
            stamps = np.zeros(count, np.int64)
        return users, items, ratings, stamps

    @staticmethod
    def _arrow_options(names: list[str], delimiter: str, types: dict[str, str], quoting: bool) -> dict | None:
        try:
            import pyarrow
            import pyarrow.csv
        except ImportError:  # the line-by-line reader does everything, only slower
            return None
        arrow_types = {"int": pyarrow.int64(), "float": pyarrow.float64()}
        return {
            "read_options": pyarrow.csv.ReadOptions(column_names=names, use_threads=False),
            "parse_options": pyarrow.csv.ParseOptions(delimiter=delimiter, quote_char='"' if quoting else False,
                                                      ignore_empty_lines=False),
            "convert_options": pyarrow.csv.ConvertOptions(
                column_types={name: arrow_types[kind] for name, kind in types.items()},
                include_columns=list(types), null_values=[""], strings_can_be_null=False),
        }


class _DelimitedReader(_BlockReader):
    """``u.data``, ``ratings.dat`` or any user/item/rating[/timestamp] layout with a fixed delimiter."""

    def __init__(self, source: str, first: str, line: int, delimiter: str, rating_range) -> None:
        self.source, self.delimiter, self.rating_range = source, delimiter, rating_range
        self.layout = "user{0}item{0}rating{0}timestamp".format("<TAB>" if delimiter == "\t" else delimiter)
        head = first.split(delimiter)
        if len(head) < 3:
            other = _guess_delimiter(first, delimiter)
            hint = f"; the line looks {_name(other)}-separated (pass --format/--delimiter to match)" if other else ""
            raise DataError(
                f"wrong delimiter: expected {_name(delimiter)}-separated fields ({self.layout}), "
                f"found {len(head)} field{'s' if len(head) != 1 else ''}{hint}",
                where=f"{source}:{line}",
            )
        fields = ["user", "item", "rating", "timestamp"][: len(head)] if len(head) in (3, 4) else []
        types = dict(zip(fields, ("int", "int", "float", "float")))
        if fields and len(delimiter) == 1:
            self._arrow = self._arrow_options(fields, delimiter, types, quoting=False)
        elif fields and delimiter == "::":  # split on ':' and leave the empty fields between out
            names = [name for field in fields for name in (field, f"_{field}")][:-1]
            self._arrow = self._arrow_options(names, ":", types, quoting=False)

    def _read_line(self, line: str, number: int, table: Table) -> None:
        parts = line.split(self.delimiter)
        try:
            if len(parts) not in (3, 4):
                raise RowError(f"expected 4 fields ({self.layout}), found {len(parts)}")
            table.add(self.source, number, _int_field(parts[0], "user id"), _int_field(parts[1], "item id"),
                      _rating(parts[2], self.rating_range), _timestamp(parts[3] if len(parts) == 4 else None))
        except RowError as err:
            table.bad_rows.append(BadRow(self.source, number, str(err)))


class _CsvReader(_BlockReader):
    """A CSV with a header, its columns mapped to user/item[/rating][/timestamp]."""

    def __init__(self, source: str, header_text: str, line: int, columns: dict[str, str], delimiter: str,
                 rating_range) -> None:
        self.source, self.delimiter, self.rating_range, self.header_line = source, delimiter, rating_range, line
        header = [h.strip() for h in next(csv.reader([header_text], delimiter=delimiter))]
        if len(header) == 1:
            other = _guess_delimiter(header_text, delimiter)
            if other:
                raise DataError(
                    f"wrong delimiter: the header has one column with {_name(delimiter)} as delimiter, "
                    f"but looks {_name(other)}-separated (pass --delimiter or --format to match)",
                    where=f"{source}:{line}",
                )
        self.positions: dict[str, int] = {}
        for key, column in columns.items():
            if column not in header:
                raise DataError(
                    f"missing column {column!r} for {key} (header has: {', '.join(header)}); "
                    "map columns with --columns user=..,item=..,rating=..,timestamp=..",
                    where=f"{source}:{line}",
                )
            self.positions[key] = header.index(column)
        self.header = header
        if len(delimiter) == 1 and len(set(self.positions.values())) == len(self.positions):
            names = [f"column {i}" for i in range(len(header))]
            for key, position in self.positions.items():
                names[position] = key
            types = {key: "int" if key in ("user", "item") else "float" for key in self.positions}
            self._arrow = self._arrow_options(names, delimiter, types, quoting=True)

    def _read_line(self, line: str, number: int, table: Table) -> None:
        parts = next(csv.reader([line], delimiter=self.delimiter), [])
        if not parts or not "".join(parts).strip():
            return
        width, positions = len(self.header), self.positions
        try:
            if len(parts) != width:
                raise RowError(f"expected {width} columns ({', '.join(self.header)}), found {len(parts)}")
            rating = _rating(parts[positions["rating"]], self.rating_range) if "rating" in positions else 1.0
            stamp = _timestamp(parts[positions["timestamp"]]) if "timestamp" in positions else 0
            table.add(self.source, number, _int_field(parts[positions["user"]], "user id"),
                      _int_field(parts[positions["item"]], "item id"), rating, stamp)
        except RowError as err:
            table.bad_rows.append(BadRow(self.source, number, str(err)))


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
    """Keep one row per (user, item): the latest timestamp, then the last read.

    One stable sort by a (user, item) key finds the pairs seen more than once; only their rows are
    ordered by time and reading order (usually none, so a clean file costs a single sort)."""
    n = len(table)
    users, items, stamps, lines = table.users, table.items, table.timestamps, table.lines
    keep = np.ones(n, bool)
    duplicates: list[Duplicate] = []
    if n:
        width = int(items.max()) + 1
        if int(users.max()) < (2**62) // width:
            key = users * width + items
        else:  # ids too large to pack: rank the pairs instead
            key = np.unique(np.stack([users, items], axis=1), axis=0, return_inverse=True)[1].ravel()
        order = np.argsort(key, kind="stable")
        sorted_key = key[order]
        repeated = sorted_key[1:] == sorted_key[:-1]
        del sorted_key
        if repeated.any():
            in_group = np.zeros(n, bool)
            in_group[:-1] |= repeated
            in_group[1:] |= repeated
            rows = order[in_group]
            rows = rows[np.lexsort((rows, stamps[rows], key[rows]))]  # by pair, then time, then reading order
            group_key = key[rows]
            last_of_group = np.ones(len(rows), bool)
            last_of_group[:-1] = group_key[1:] != group_key[:-1]
            keep[rows[~last_of_group]] = False
            group_end = np.flatnonzero(last_of_group)
            owner = group_end[np.searchsorted(group_end, np.arange(len(rows)))]
            for position in np.flatnonzero(~last_of_group):
                row, kept = int(rows[position]), int(rows[owner[position]])
                duplicates.append(Duplicate(table.source_of(row), int(lines[row]), table.source_of(kept),
                                            int(lines[kept]), int(users[row]), int(items[row])))
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
    if keep.all():
        return Interactions.from_arrays(users, items, table.ratings, stamps), duplicates
    data = Interactions.from_arrays(users[keep], items[keep], table.ratings[keep], stamps[keep])
    return data, duplicates
