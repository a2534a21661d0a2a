"""The online services: ``Recommender``, ``Similar`` and ``Events``.

Run one replica of each with ``lichen serve``::

    lichen serve recsys.services:Recommender --port 8001 --app-dir examples/recsys
    lichen serve recsys.services:Similar     --port 8002 --app-dir examples/recsys
    lichen serve recsys.services:Events      --port 8003 --app-dir examples/recsys

or all of them, with replicas and the gateway, under ``lichen up``.

* The recommender and similar services load the **promoted** version of the
  model (``MODEL_NAME``, default ``recommender``) from the model registry in
  ``setup()``. A poller (every ``MODEL_POLL_S`` s) notices a new promotion,
  loads it in the background and swaps it in with one reference assignment:
  a request uses the snapshot it started with, so none fails mid-swap.
* Results are cached in an in-process LRU (``CACHE_SIZE`` entries) or, when
  ``REDIS_URL`` is set, in Redis, shared by every replica. Keys include the
  model version, so a promotion invalidates them.
* The events service validates each event, records its id in SQLite
  (``UNIQUE``: a retried event is accepted once) and appends it, fsynced, to
  ``<app>/.lichen/events/events-YYYYMMDD.jsonl``: the log the next
  ``ingest`` reads.
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import HTTPException, Query
from prometheus_client import Counter, Gauge
from pydantic import BaseModel, Field

from lichen import ModelRegistry, Service, endpoint

log = logging.getLogger("recsys.services")

APP_DIR = Path(os.environ.get("LICHEN_APP_DIR") or Path(__file__).resolve().parents[1])
DEFAULT_MODEL_NAME = "recommender"
MAX_K = 100


def app_dir() -> Path:
    return Path(os.environ.get("LICHEN_APP_DIR") or APP_DIR)


def registry_root() -> Path:
    return Path(os.environ.get("LICHEN_MODEL_REGISTRY") or app_dir() / ".lichen" / "models")


def events_dir() -> Path:
    return Path(os.environ.get("RECSYS_EVENTS_DIR") or app_dir() / ".lichen" / "events")


# ---------------------------------------------------------------- models


@dataclass(frozen=True)
class LoadedModel:
    """One promoted model version and the item metadata of its dataset."""

    name: str
    version: int
    model: Any  # recsys.models.RecModel
    items: dict[int, dict]
    genres: dict[str, frozenset[int]]


def _item_metadata(dataset_version: str | None) -> dict[int, dict]:
    if not dataset_version:
        return {}
    try:
        from recsys import datasets

        return datasets.load_items(app_dir() / datasets.DEFAULT_STORE, dataset_version)
    except Exception as exc:  # metadata is optional: filters by genre just find nothing
        log.warning("no item metadata for dataset %s: %s", dataset_version, exc)
        return {}


def load_version(registry: ModelRegistry, name: str, version: int) -> LoadedModel:
    from recsys.models import load_model

    mv = registry.get(name, version)
    if os.environ.get("MODEL_VERIFY", "1") != "0" and not registry.verify(name, version):
        # A damaged or hand-edited version never serves; the poller keeps the current one.
        raise RuntimeError(f"model {name} v{version} at {mv.path} does not match its registered checksum")
    model = load_model(mv.path)
    items = _item_metadata(mv.dataset_version)
    genres: dict[str, set[int]] = collections.defaultdict(set)
    for item_id, meta in items.items():
        for genre in meta.get("genres") or []:
            genres[genre.lower()].add(item_id)
    return LoadedModel(name, mv.version, model, items, {g: frozenset(ids) for g, ids in genres.items()})


class ModelHolder:
    """The promoted model, kept current by a background poller."""

    def __init__(self, name: str, registry: ModelRegistry, poll_s: float, on_swap: Any = None) -> None:
        self.name = name
        self.registry = registry
        self.poll_s = poll_s
        self.on_swap = on_swap
        self.current: LoadedModel | None = None
        self.swaps = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def load_promoted(self) -> LoadedModel:
        version = self.registry.promoted_version(self.name)
        if version is None:
            raise RuntimeError(
                f"no promoted version of model {self.name!r} in {self.registry.root}; "
                "run the pipeline first (lichen run) or `lichen models promote`"
            )
        self._swap(load_version(self.registry, self.name, version))
        return self.current  # type: ignore[return-value]

    def _swap(self, loaded: LoadedModel) -> None:
        previous = self.current
        self.current = loaded  # one reference assignment: readers see old or new, never a mix
        self.swaps += 1
        if self.on_swap is not None:
            self.on_swap(previous, loaded)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._poll, name=f"model-poll-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def check_once(self) -> bool:
        """Load and swap in a newly promoted (or rolled back) version; True if swapped."""
        version = self.registry.promoted_version(self.name)
        current = self.current
        if version is None or (current is not None and current.version == version):
            return False
        loaded = load_version(self.registry, self.name, version)
        log.info("model %s: serving v%s (was v%s)", self.name, version, current.version if current else None)
        self._swap(loaded)
        return True

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.check_once()
            except Exception as exc:  # keep serving the current version; try again next tick
                log.warning("model %s: could not load the promoted version: %s", self.name, exc)


class RecentEvents:
    """Items a user interacted with through the events service, read from its index.

    Served histories are the model's training history plus these, so an item
    a user just rated is excluded at once (not only after the next training),
    and a user known only through events is no longer cold.
    """

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection | None:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if not self.db_path.exists():
                return None
            # Not mode=ro: a read-only handle cannot open a WAL database whose writer has closed it.
            conn = sqlite3.connect(self.db_path, timeout=1, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=1000")
            conn.execute("PRAGMA query_only=1")
            self._local.conn = conn
        return conn

    def items(self, user_id: int) -> list[int]:
        conn = self._conn()
        if conn is None:
            return []
        try:
            rows = conn.execute("SELECT item_id FROM events WHERE user_id=? ORDER BY received_at", (user_id,))
            return [int(r[0]) for r in rows if r[0] is not None]
        except sqlite3.Error:  # an events index older than this reader, or locked: serve without it
            self._local.conn = None
            conn.close()
            return []


# ----------------------------------------------------------------- cache


class LruCache:
    """A bounded, thread-safe in-process LRU."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._data: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def set(self, key: str, value: bytes) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


class RedisCache:
    """Redis as the cache every replica shares; entries expire after ``ttl_s``."""

    def __init__(self, url: str, ttl_s: int) -> None:
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=0.25, socket_connect_timeout=0.5)
        self.ttl_s = ttl_s
        self.errors = 0

    def get(self, key: str) -> bytes | None:
        try:
            return self.client.get(key)
        except Exception:  # a cache outage degrades to computing, never to an error
            self.errors += 1
            return None

    def set(self, key: str, value: bytes) -> None:
        try:
            self.client.set(key, value, ex=self.ttl_s)
        except Exception:
            self.errors += 1

    def clear(self) -> None:
        """Nothing to do: keys carry the model version, old ones expire."""


def make_cache() -> LruCache | RedisCache | None:
    size = int(os.environ.get("CACHE_SIZE", "10000"))
    if size <= 0:
        return None
    url = os.environ.get("REDIS_URL")
    if url:
        return RedisCache(url, ttl_s=int(os.environ.get("CACHE_TTL_S", "3600")))
    return LruCache(size)


# ------------------------------------------------------------- recommender


class ItemScore(BaseModel):
    item_id: int
    score: float
    title: str | None = None
    genres: list[str] = Field(default_factory=list)


class Recommendations(BaseModel):
    user_id: int | None = None
    model: str
    model_version: int
    items: list[ItemScore]
    cached: bool = False


class HistoryRequest(BaseModel):
    """A cold or anonymous user: recommend from an explicit history."""

    history: Annotated[list[int], Field(min_length=1, max_length=10_000)]
    k: Annotated[int, Field(ge=1, le=MAX_K)] = 10
    user_id: int | None = None
    genres: list[str] = Field(default_factory=list, description="Only items of one of these genres.")
    exclude: list[int] = Field(default_factory=list, description="Item ids never to return.")


class _ModelService(Service):
    """Shared setup: the promoted model, a poller and the cache."""

    def __init__(self) -> None:
        super().__init__()
        self.model_name = os.environ.get("MODEL_NAME", DEFAULT_MODEL_NAME)
        self.cache = make_cache()
        self.cache_hits = Counter("recsys_cache_hits_total", "Result cache hits.", registry=self.metrics)
        self.cache_misses = Counter("recsys_cache_misses_total", "Result cache misses.", registry=self.metrics)
        self.model_version = Gauge("recsys_model_version", "Model version serving now.", registry=self.metrics)
        self.holder: ModelHolder | None = None
        self.recent = RecentEvents(events_dir() / "events.db")

    def setup(self) -> None:
        registry = ModelRegistry(registry_root())
        self.holder = ModelHolder(
            self.model_name, registry, float(os.environ.get("MODEL_POLL_S", "1.0")), on_swap=self._swapped
        )
        self.holder.load_promoted()
        self.holder.start()

    def ready(self) -> bool:
        return self.holder is not None and self.holder.current is not None

    def teardown(self) -> None:
        if self.holder is not None:
            self.holder.stop()

    def _swapped(self, previous: LoadedModel | None, loaded: LoadedModel) -> None:
        self.model_version.set(loaded.version)
        if previous is not None and self.cache is not None:
            self.cache.clear()

    def snapshot(self) -> LoadedModel:
        current = self.holder.current if self.holder is not None else None
        if current is None:
            raise HTTPException(503, "no model loaded yet")
        return current

    def _cached(self, key: str) -> dict[str, Any] | None:
        if self.cache is None:
            return None
        raw = self.cache.get(key)
        if raw is None:
            self.cache_misses.inc()
            return None
        self.cache_hits.inc()
        return json.loads(raw)

    def _store(self, key: str, value: dict[str, Any]) -> None:
        if self.cache is not None:
            self.cache.set(key, json.dumps(value, separators=(",", ":")).encode())

    @staticmethod
    def _items(loaded: LoadedModel, pairs: list[tuple[int, float]]) -> list[dict[str, Any]]:
        out = []
        for item_id, score in pairs:
            meta = loaded.items.get(item_id) or {}
            out.append({"item_id": item_id, "score": round(score, 6), "title": meta.get("title"),
                        "genres": meta.get("genres") or []})
        return out


def _parse_ids(text: str | None, what: str) -> list[int]:
    if not text:
        return []
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise HTTPException(422, f"{what}: expected comma-separated integer item ids, got {text!r}") from None


class Recommender(_ModelService):
    """Top-k recommendations from the promoted model; seen items are never returned."""

    @staticmethod
    def _genre_filter(loaded: LoadedModel, genres: list[str]):
        if not genres:
            return None
        allowed: set[int] = set()
        for genre in genres:
            allowed |= loaded.genres.get(genre.lower(), frozenset())
        return allowed.__contains__

    def _recommend(
        self, loaded: LoadedModel, history: list[int], k: int, genres: list[str], exclude: list[int]
    ) -> list[dict[str, Any]]:
        pairs = loaded.model.recommend(history, k, exclude=set(exclude) or None,
                                       filter_fn=self._genre_filter(loaded, genres))
        return self._items(loaded, pairs)

    @endpoint("/v1/recommendations/{user_id}", method="GET", timeout_s=2, max_concurrency=64)
    def for_user(
        self,
        user_id: int,
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
        genre: Annotated[str | None, Query(description="Comma-separated genres to keep.")] = None,
        exclude: Annotated[str | None, Query(description="Comma-separated item ids never to return.")] = None,
    ) -> Recommendations:
        """Recommendations for a known user: their training history plus the items they sent as events."""
        loaded = self.snapshot()
        genres = [g.strip() for g in genre.split(",") if g.strip()] if genre else []
        excluded = _parse_ids(exclude, "exclude")
        recent = self.recent.items(user_id)
        # The number of the user's events is part of the key: a new event invalidates their entries.
        key = (f"recsys:rec:{loaded.name}:v{loaded.version}:u{user_id}:e{len(recent)}:k{k}"
               f":g{','.join(sorted(genres))}:x{','.join(map(str, sorted(excluded)))}")
        hit = self._cached(key)
        if hit is not None:
            return Recommendations(**hit, cached=True)
        if not recent and not loaded.model.knows(user_id):
            raise HTTPException(
                404, f"unknown user {user_id}: no history in model v{loaded.version}; "
                "POST /v1/recommendations with {\"history\": [item ids]} instead"
            )
        # the training history plus the user's events: from the user's precomputed candidates when they
        # certify the answer (a heavy history), by scoring the history otherwise (recsys.models.candidates)
        pairs = loaded.model.recommend_user(user_id, recent, k, exclude=set(excluded) or None,
                                            filter_fn=self._genre_filter(loaded, genres))
        value = {"user_id": user_id, "model": loaded.name, "model_version": loaded.version,
                 "items": self._items(loaded, pairs)}
        self._store(key, value)
        return Recommendations(**value)

    @endpoint("/v1/recommendations", method="POST", timeout_s=2, max_concurrency=64, idempotent=True)
    def for_history(self, req: HistoryRequest) -> Recommendations:
        """Recommendations for a cold user from an explicit history of item ids."""
        loaded = self.snapshot()
        digest = hashlib.sha1(
            json.dumps([sorted(set(req.history)), sorted(g.lower() for g in req.genres), sorted(req.exclude)]).encode()
        ).hexdigest()
        key = f"recsys:hist:{loaded.name}:v{loaded.version}:k{req.k}:{digest}"
        hit = self._cached(key)
        if hit is not None:
            return Recommendations(**{**hit, "user_id": req.user_id}, cached=True)
        known = loaded.model.items.index(req.history)
        if not (known >= 0).any():
            raise HTTPException(422, f"history: none of the {len(req.history)} item ids is known to model "
                                     f"v{loaded.version}")
        value = {"user_id": None, "model": loaded.name, "model_version": loaded.version,
                 "items": self._recommend(loaded, req.history, req.k, req.genres, req.exclude)}
        self._store(key, value)
        return Recommendations(**{**value, "user_id": req.user_id})


# ----------------------------------------------------------------- similar


class SimilarItems(BaseModel):
    item_id: int
    model: str
    model_version: int
    items: list[ItemScore]
    cached: bool = False


class Similar(_ModelService):
    """Items similar to an item, by the promoted model's item-item similarity."""

    @endpoint("/v1/items/{item_id}/similar", method="GET", timeout_s=2, max_concurrency=64)
    def similar(self, item_id: int, k: Annotated[int, Query(ge=1, le=MAX_K)] = 10) -> SimilarItems:
        """The k items most similar to item_id."""
        loaded = self.snapshot()
        key = f"recsys:sim:{loaded.name}:v{loaded.version}:i{item_id}:k{k}"
        hit = self._cached(key)
        if hit is not None:
            return SimilarItems(**hit, cached=True)
        pairs = loaded.model.similar(item_id, k)
        if not pairs and int(loaded.model.items.index([item_id])[0]) < 0:
            raise HTTPException(404, f"unknown item {item_id} in model v{loaded.version}")
        value = {"item_id": item_id, "model": loaded.name, "model_version": loaded.version,
                 "items": self._items(loaded, pairs)}
        self._store(key, value)
        return SimilarItems(**value)


# ------------------------------------------------------------------ events


class Event(BaseModel):
    """One interaction, as appended to the events log (see docs/recsys.md)."""

    event_id: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")]
    user_id: Annotated[int, Field(ge=0)]
    item_id: Annotated[int, Field(ge=0)]
    type: Annotated[str, Field(pattern=r"^(rating|view|click|purchase)$")] = "rating"
    rating: Annotated[float, Field(ge=0.5, le=5.0)] | None = None
    timestamp: Annotated[int, Field(ge=0)] | None = None


class EventReceipt(BaseModel):
    event_id: str
    accepted: bool
    duplicate: bool
    log: str | None = None


_EVENTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY,
    received_at REAL NOT NULL,
    log_file TEXT NOT NULL,
    user_id INTEGER,
    item_id INTEGER
);
"""


class EventLog:
    """Idempotent, durable appends: SQLite decides "new or seen", the JSONL file holds the event.

    Order within one ``BEGIN IMMEDIATE`` transaction (which also serialises
    replicas): look the id up, append + fsync the line, insert the id,
    commit. A crash before the commit leaves a line whose id is not yet
    recorded; the client's retry appends it again and ``ingest`` counts an
    ``event_id`` once, so every accepted event is in the log exactly once in
    effect, and a 2xx is only sent after the fsync.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.db_path = directory / "events.db"
        self._local = threading.local()
        self._lock = threading.Lock()
        with self._conn() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_EVENTS_SCHEMA)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
            for column in ("user_id", "item_id"):  # an index written by an earlier version
                if column not in columns:
                    conn.execute(f"ALTER TABLE events ADD COLUMN {column} INTEGER")
            conn.execute("CREATE INDEX IF NOT EXISTS events_by_user ON events (user_id)")

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.db_path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    def append(self, event: Event, now: float) -> tuple[bool, Path]:
        """Returns (is_new, log file)."""
        day = dt.datetime.fromtimestamp(now, tz=dt.timezone.utc).strftime("%Y%m%d")
        log_file = self.directory / f"events-{day}.jsonl"
        record = event.model_dump(exclude_none=True)
        record.setdefault("timestamp", int(now))
        record["received_at"] = round(now, 3)
        line = (json.dumps(record, separators=(",", ":"), sort_keys=True) + "\n").encode()
        conn = self._conn()
        with self._lock:  # one writer per process; BEGIN IMMEDIATE orders processes
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute("SELECT log_file FROM events WHERE event_id=?", (event.event_id,)).fetchone()
                if row is not None:
                    conn.execute("ROLLBACK")
                    return False, Path(row[0])
                fd = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    os.write(fd, line)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                conn.execute(
                    "INSERT INTO events (event_id, received_at, log_file, user_id, item_id) VALUES (?, ?, ?, ?, ?)",
                    (event.event_id, now, str(log_file), event.user_id, event.item_id),
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return True, log_file

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()


class Events(Service):
    """Takes new interactions; each is validated, idempotent by event_id and fsynced to the events log."""

    def __init__(self) -> None:
        super().__init__()
        self.log: EventLog | None = None
        self.accepted = Counter("recsys_events_total", "Events received, by outcome.", ["outcome"],
                                registry=self.metrics)

    def setup(self) -> None:
        self.log = EventLog(events_dir())

    @endpoint("/v1/events", method="POST", timeout_s=5, max_concurrency=32, idempotent=True)
    def record(self, event: Event) -> EventReceipt:
        """Append one interaction to the events log the next `ingest` reads."""
        assert self.log is not None
        is_new, log_file = self.log.append(event, time.time())
        self.accepted.labels("new" if is_new else "duplicate").inc()
        return EventReceipt(event_id=event.event_id, accepted=True, duplicate=not is_new,
                            log=str(log_file.relative_to(app_dir())) if log_file.is_relative_to(app_dir())
                            else str(log_file))
