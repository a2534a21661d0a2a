"""Item metadata (title, genres, year) from the MovieLens files that sit
beside the ratings: ``u.item`` (``|``, ISO-8859-1, genre flags named by
``u.genre``), ``movies.dat`` (``::``) or ``movies.csv`` (header). Metadata is
optional: a malformed line is reported, never fatal."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from recsys.ingesting import BadRow

ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
]
_YEAR = re.compile(r"\((\d{4})\)\s*$")


def find_metadata(ratings_path: Path) -> Path | None:
    for name in ("u.item", "movies.dat", "movies.csv"):
        candidate = ratings_path.parent / name
        if candidate.is_file():
            return candidate
    return None


def _entry(title: str, genres: list[str]) -> dict:
    match = _YEAR.search(title)
    return {"title": title.strip(), "genres": genres, "year": int(match.group(1)) if match else None}


def read_metadata(path: Path) -> tuple[dict[int, dict], list[BadRow]]:
    """Item id → {title, genres, year}, plus the lines that could not be read."""
    # MovieLens 100K/1M ship ISO-8859-1; the newer movies.csv is UTF-8.
    text = path.read_bytes().decode("utf-8" if path.suffix == ".csv" else "iso-8859-1", errors="replace")
    items: dict[int, dict] = {}
    bad: list[BadRow] = []
    source = str(path)
    if path.name == "u.item":
        genres = ML100K_GENRES
        genre_file = path.parent / "u.genre"
        if genre_file.is_file():
            names = [line.split("|")[0] for line in genre_file.read_bytes().decode("iso-8859-1").splitlines()
                     if "|" in line]
            genres = names or genres
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            parts = line.split("|")
            try:
                flags = parts[5:]
                items[int(parts[0])] = _entry(parts[1], [g for g, f in zip(genres, flags) if f.strip() == "1"])
            except (ValueError, IndexError):
                bad.append(BadRow(source, number, "expected id|title|...|genre flags"))
    elif path.suffix == ".dat":
        for number, line in enumerate(text.splitlines(), start=1):
            parts = line.split("::")
            try:
                items[int(parts[0])] = _entry(parts[1], [g for g in parts[2].split("|") if g])
            except (ValueError, IndexError):
                if line.strip():
                    bad.append(BadRow(source, number, "expected id::title::genres"))
    else:
        rows = csv.reader(io.StringIO(text))
        header = next(rows, [])
        for number, row in enumerate(rows, start=2):
            try:
                record = dict(zip(header, row))
                items[int(record["movieId"])] = _entry(record["title"], [
                    g for g in record.get("genres", "").split("|") if g and g != "(no genres listed)"])
            except (ValueError, KeyError):
                if row:
                    bad.append(BadRow(source, number, "expected movieId,title,genres"))
    return items, bad
