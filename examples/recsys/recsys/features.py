"""Features for serving: per-user histories (oldest first), item popularity,
item-item co-occurrence (each item's top-N) and item metadata.

Two stores, one reader:

- **SQLite** (default, ``.lichen/features.db``): the whole file is built
  beside the target and renamed into place with ``lichen.atomic_output``, so
  a reader sees the old features or the new ones. :class:`FeatureReader`
  notices the rename and reopens.
- **Redis** (``--redis-url`` or ``REDIS_URL``): keys live under
  ``recsys:<dataset version>:``; the pointer ``recsys:current`` is switched
  only after every key of the new version is written, then the previous
  version's keys are deleted.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from lichen import atomic_output

from recsys.interactions import IdMap, Interactions, interaction_matrix

DEFAULT_SQLITE = Path(".lichen") / "features.db"
REDIS_PREFIX = "recsys"
REDIS_URL_ENV = "REDIS_URL"


@dataclass(frozen=True)
class FeatureSet:
    dataset_version: str
    histories: dict[int, list[int]]
    popularity: dict[int, int]
    cooccurrence: dict[int, list[tuple[int, int]]]
    metadata: dict[int, dict]

    def item_record(self, item_id: int) -> dict[str, Any]:
        meta = self.metadata.get(item_id, {})
        return {"item_id": item_id, "popularity": self.popularity.get(item_id, 0),
                "title": meta.get("title"), "genres": meta.get("genres", []), "year": meta.get("year")}


def build_features(data: Interactions, metadata: dict[int, dict], dataset_version: str,
                   top_n: int = 20) -> FeatureSet:
    users, items = IdMap.of(data.users), IdMap.of(data.items)
    order = np.lexsort((data.timestamps, data.users))
    histories: dict[int, list[int]] = {}
    sorted_users, sorted_items = data.users[order], data.items[order]
    bounds = np.flatnonzero(np.diff(sorted_users)) + 1
    for chunk_users, chunk_items in zip(np.split(sorted_users, bounds), np.split(sorted_items, bounds)):
        if len(chunk_users):
            histories[int(chunk_users[0])] = chunk_items.tolist()
    matrix = interaction_matrix(data, users, items)
    counts = np.asarray(matrix.sum(axis=0)).ravel().astype(int)
    popularity = {int(i): int(c) for i, c in zip(items.ids, counts)}
    cooccurrence = top_cooccurring(matrix, items.ids, top_n)
    return FeatureSet(dataset_version, histories, popularity, cooccurrence, metadata)


def top_cooccurring(matrix: sp.csr_matrix, item_ids: np.ndarray, top_n: int) -> dict[int, list[tuple[int, int]]]:
    """Each item's ``top_n`` co-occurring items (most first, ties by item index), from XᵀX a block of
    rows at a time: the whole sparse product of a large catalogue takes more memory than the data
    (681 M entries for ML-20M's shape), a block of it only ``block_rows`` rows."""
    from recsys.memory_budgets import block_rows

    n = matrix.shape[1]
    transposed = sp.csr_matrix(matrix.T)
    matrix = sp.csr_matrix(matrix, dtype=np.int64)
    step = block_rows(n)
    keep = min(top_n, n)
    out: dict[int, list[tuple[int, int]]] = {}
    for start in range(0, n, step):
        stop = min(n, start + step)
        counts = (transposed[start:stop].astype(np.int64) @ matrix).toarray()
        counts[np.arange(stop - start), np.arange(start, stop)] = 0  # an item with itself
        # one key orders by count, then by the smaller item index: count · n + (n − 1 − index)
        key = counts * n + (n - 1 - np.arange(n))
        del counts
        part = np.argpartition(-key, keep - 1, axis=1)[:, :keep] if keep < n else np.tile(np.arange(n), (stop - start, 1))
        best = np.take_along_axis(key, part, axis=1)
        order = np.argsort(-best, axis=1, kind="stable")
        part, best = np.take_along_axis(part, order, axis=1), np.take_along_axis(best, order, axis=1)
        best //= n  # back to counts
        for row in range(stop - start):
            chosen = best[row] > 0
            if chosen.any():
                out[int(item_ids[start + row])] = list(zip(item_ids[part[row][chosen]].tolist(),
                                                           best[row][chosen].tolist()))
        del key
    return out


# ------------------------------------------------------------------ SQLite

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE histories (user_id INTEGER PRIMARY KEY, items TEXT NOT NULL);
CREATE TABLE items (item_id INTEGER PRIMARY KEY, popularity INTEGER NOT NULL, title TEXT, genres TEXT, year INTEGER);
CREATE TABLE cooccurrence (item_id INTEGER NOT NULL, rank INTEGER NOT NULL, other_id INTEGER NOT NULL,
                           count INTEGER NOT NULL, PRIMARY KEY (item_id, rank));
"""


def write_sqlite(path: str | Path, features: FeatureSet) -> Path:
    """Build the database beside ``path`` and rename it into place."""
    path = Path(path)
    with atomic_output(path) as tmp:
        tmp.unlink()  # sqlite creates its own file
        conn = sqlite3.connect(tmp)
        try:
            conn.executescript(_SCHEMA)
            with conn:
                conn.executemany("INSERT INTO meta VALUES (?, ?)", [
                    ("dataset_version", features.dataset_version), ("created_at", str(time.time()))])
                conn.executemany("INSERT INTO histories VALUES (?, ?)",
                                 ((u, json.dumps(h)) for u, h in features.histories.items()))
                item_ids = sorted(set(features.popularity) | set(features.metadata))
                rows = []
                for item_id in item_ids:
                    rec = features.item_record(item_id)
                    rows.append((item_id, rec["popularity"], rec["title"], json.dumps(rec["genres"]), rec["year"]))
                conn.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?)", rows)
                conn.executemany("INSERT INTO cooccurrence VALUES (?, ?, ?, ?)", (
                    (item, rank, other, count)
                    for item, pairs in features.cooccurrence.items()
                    for rank, (other, count) in enumerate(pairs)))
        finally:
            conn.close()
    return path


# ------------------------------------------------------------------- Redis


def _redis_client(url: str):
    import redis

    return redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0)


def write_redis(url: str, features: FeatureSet, *, batch: int = 2000) -> int:
    """Write every key of this version, then switch ``recsys:current`` to it
    and delete the previous version's keys. Returns the number of keys written."""
    client = _redis_client(url)
    version = features.dataset_version
    base = f"{REDIS_PREFIX}:{version}:"
    entries: list[tuple[str, str]] = []
    entries += [(f"{base}hist:{u}", json.dumps(h)) for u, h in features.histories.items()]
    for item_id in sorted(set(features.popularity) | set(features.metadata)):
        entries.append((f"{base}item:{item_id}", json.dumps(features.item_record(item_id))))
    entries += [(f"{base}cooc:{i}", json.dumps(pairs)) for i, pairs in features.cooccurrence.items()]
    popular = sorted(features.popularity.items(), key=lambda kv: (-kv[1], kv[0]))[:1000]
    entries.append((f"{base}popular", json.dumps(popular)))
    for start in range(0, len(entries), batch):
        pipe = client.pipeline(transaction=False)
        for key, value in entries[start:start + batch]:
            pipe.set(key, value)
        pipe.execute()
    previous = client.set(f"{REDIS_PREFIX}:current", version, get=True)
    previous = previous.decode() if isinstance(previous, bytes) else previous
    if previous and previous != version:
        stale = list(client.scan_iter(match=f"{REDIS_PREFIX}:{previous}:*", count=1000))
        for start in range(0, len(stale), batch):
            client.delete(*stale[start:start + batch])
    return len(entries)


# ------------------------------------------------------------------ reader


class FeatureReader:
    """Read features from a SQLite path or a ``redis://`` URL.

    ``history(user_id)`` → item ids (oldest first, [] for unknown users);
    ``item_meta(item_id)`` → {item_id, popularity, title, genres, year} or None;
    ``co_occurring(item_id, k)`` → [(item_id, count)]; ``popular(k)`` → [(item_id, count)].
    """

    def __init__(self, url_or_path: str | os.PathLike[str], *, refresh_s: float = 2.0) -> None:
        self.location = str(url_or_path)
        self.is_redis = self.location.startswith(("redis://", "rediss://", "unix://"))
        self.refresh_s = refresh_s
        self._conn: sqlite3.Connection | None = None
        self._inode: tuple[int, int] | None = None
        self._checked_at = 0.0
        self._version: str | None = None
        self._redis = _redis_client(self.location) if self.is_redis else None
        if not self.is_redis and not Path(self.location).is_file():
            from lichen import DataError

            raise DataError("feature store not found: run the features job first", where=self.location)

    # SQLite: reopen when the file was replaced by a newer build.
    def _sqlite(self) -> sqlite3.Connection:
        now = time.monotonic()
        if self._conn is None or now - self._checked_at >= self.refresh_s:
            self._checked_at = now
            stat = os.stat(self.location)
            inode = (stat.st_dev, stat.st_ino)
            if inode != self._inode:
                if self._conn is not None:
                    self._conn.close()
                self._conn = sqlite3.connect(f"file:{self.location}?mode=ro", uri=True, check_same_thread=False)
                self._inode = inode
        return self._conn

    def _redis_version(self, force: bool = False) -> str | None:
        now = time.monotonic()
        if force or self._version is None or now - self._checked_at >= self.refresh_s:
            raw = self._redis.get(f"{REDIS_PREFIX}:current")
            self._version = raw.decode() if raw else None
            self._checked_at = now
        return self._version

    def _redis_get(self, suffix: str) -> Any:
        for force in (False, True):  # the version may have switched under us: retry once with a fresh pointer
            version = self._redis_version(force)
            if version is None:
                return None
            raw = self._redis.get(f"{REDIS_PREFIX}:{version}:{suffix}")
            if raw is not None:
                return json.loads(raw)
        return None

    @property
    def dataset_version(self) -> str | None:
        if self.is_redis:
            return self._redis_version(force=True)
        row = self._sqlite().execute("SELECT value FROM meta WHERE key='dataset_version'").fetchone()
        return row[0] if row else None

    def history(self, user_id: int) -> list[int]:
        if self.is_redis:
            return self._redis_get(f"hist:{int(user_id)}") or []
        row = self._sqlite().execute("SELECT items FROM histories WHERE user_id=?", (int(user_id),)).fetchone()
        return json.loads(row[0]) if row else []

    def item_meta(self, item_id: int) -> dict[str, Any] | None:
        if self.is_redis:
            return self._redis_get(f"item:{int(item_id)}")
        row = self._sqlite().execute(
            "SELECT item_id, popularity, title, genres, year FROM items WHERE item_id=?", (int(item_id),)).fetchone()
        if row is None:
            return None
        return {"item_id": row[0], "popularity": row[1], "title": row[2], "genres": json.loads(row[3] or "[]"),
                "year": row[4]}

    def co_occurring(self, item_id: int, k: int = 10) -> list[tuple[int, int]]:
        if self.is_redis:
            return [tuple(p) for p in (self._redis_get(f"cooc:{int(item_id)}") or [])[:k]]
        rows = self._sqlite().execute(
            "SELECT other_id, count FROM cooccurrence WHERE item_id=? ORDER BY rank LIMIT ?", (int(item_id), k))
        return [(a, b) for a, b in rows]

    def popular(self, k: int = 10) -> list[tuple[int, int]]:
        if self.is_redis:
            return [tuple(p) for p in (self._redis_get("popular") or [])[:k]]
        rows = self._sqlite().execute(
            "SELECT item_id, popularity FROM items WHERE popularity > 0 ORDER BY popularity DESC, item_id LIMIT ?",
            (k,))
        return [(a, b) for a, b in rows]

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._redis is not None:
            self._redis.close()
