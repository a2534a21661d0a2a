"""Scraping targets' ``/metrics`` into the series store, with timeouts, ``up`` and staleness.

Interface (stable; the controller loop calls it):

* ``ScrapeTarget(url, service="", revision="", replica="", instance=None, labels={})`` —
  ``instance`` defaults to the URL's ``host:port``.
* ``Scraper(store, timeout_s=2.0, client=None, max_concurrency=64)``
  * ``await scraper.scrape_all(targets, now_s) -> list[ScrapeResult]`` — scrape concurrently;
    ``now_s`` is Unix seconds and becomes every sample's timestamp. Never raises for a target's
    failure: the result carries ``error`` and the store gets ``up 0``.
  * ``await scraper.run(targets_fn, interval_s, clock)`` — scrape forever (run it as a task).
  * ``scraper.last_results`` — the latest :class:`ScrapeResult` per target URL.

Each stored sample gets the target's ``service``, ``revision``, ``replica`` and ``instance``
labels (a scraped label of the same name is kept as ``exported_<name>``, as Prometheus does
without ``honor_labels``), plus per target ``up``, ``scrape_duration_seconds`` and
``scrape_samples_scraped``. A series that disappears from a target — or every series of a target
whose scrape fails — gets a stale marker, so queries stop seeing it at once. Exposed timestamps are
ignored: samples are stamped with the scrape time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from lichen.clocks import Clock
from lichen.errors import DataError
from lichen.logs import get_logger
from lichen.observe.expositions import ExpositionParser
from lichen.observe.series import Labels, SeriesStore

log = get_logger(__name__)


@dataclass(frozen=True)
class ScrapeTarget:
    url: str
    service: str = ""
    revision: str = ""
    replica: str = ""
    instance: str | None = None
    labels: tuple[tuple[str, str], ...] = ()

    def target_labels(self) -> dict[str, str]:
        out = dict(self.labels)
        out.update(
            {
                "service": self.service,
                "revision": self.revision,
                "replica": self.replica,
                "instance": self.instance or urlsplit(self.url).netloc,
            }
        )
        return {k: v for k, v in out.items() if v}


@dataclass
class ScrapeResult:
    target: ScrapeTarget
    time_s: float
    duration_s: float
    samples: int = 0
    error: str | None = None

    @property
    def up(self) -> bool:
        return self.error is None


@dataclass
class _TargetState:
    series: set[Labels] = field(default_factory=set)
    meta: set[Labels] = field(default_factory=set)
    keys: dict[str, Labels] = field(default_factory=dict)
    parser: ExpositionParser = field(default_factory=ExpositionParser)


class Scraper:
    def __init__(
        self,
        store: SeriesStore,
        timeout_s: float = 2.0,
        client: httpx.AsyncClient | None = None,
        max_concurrency: int = 64,
    ) -> None:
        self.store = store
        self.timeout_s = timeout_s
        self._client = client
        self._own_client = client is None
        self._limit = asyncio.Semaphore(max_concurrency)
        self._state: dict[str, _TargetState] = {}
        self.last_results: dict[str, ScrapeResult] = {}

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self.timeout_s,
                limits=httpx.Limits(max_connections=256, max_keepalive_connections=256),
                headers={"Accept": "text/plain;version=0.0.4"},
            )
        return self._client

    def metadata(self) -> dict[str, list[dict[str, str]]]:
        """Prometheus' /api/v1/metadata data: each metric family's distinct type/help/unit across targets."""
        out: dict[str, list[dict[str, str]]] = {}
        for state in self._state.values():
            for name, meta in state.parser.metadata.items():
                entry = {"type": meta["type"], "help": meta["help"], "unit": ""}
                if entry not in out.setdefault(name, []):
                    out[name].append(entry)
        return out

    async def aclose(self) -> None:
        if self._client is not None and self._own_client:
            await self._client.aclose()
            self._client = None

    async def scrape_all(self, targets: Iterable[ScrapeTarget], now_s: float) -> list[ScrapeResult]:
        targets = list(targets)
        results = await asyncio.gather(*(self.scrape(t, now_s) for t in targets))
        live = {t.url for t in targets}
        for url in list(self._state):
            if url not in live:  # a target that went away: end its series now
                t_ms = int(now_s * 1000)
                gone = self._state.pop(url)
                for key in gone.series | gone.meta:
                    self.store.mark_stale(key, t_ms)
                self.last_results.pop(url, None)
        return list(results)

    async def scrape(self, target: ScrapeTarget, now_s: float) -> ScrapeResult:
        started = time.perf_counter()
        error: str | None = None
        text = ""
        async with self._limit:
            try:
                response = await asyncio.wait_for(self._http().get(target.url), timeout=self.timeout_s)
                if response.status_code != 200:
                    error = f"server returned HTTP status {response.status_code}"
                else:
                    text = response.text
            except (httpx.HTTPError, asyncio.TimeoutError, OSError) as exc:
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        duration = time.perf_counter() - started
        count = 0
        if error is None:
            try:
                count = self._store_samples(target, text, now_s)
            except DataError as exc:
                error = exc.message
        if error is not None:
            self._end_series(target, now_s)
        self._store_meta(target, now_s, error is None, duration, count)
        result = ScrapeResult(target, now_s, duration, count, error)
        self.last_results[target.url] = result
        return result

    def _store_samples(self, target: ScrapeTarget, text: str, now_s: float) -> int:
        state = self._state.setdefault(target.url, _TargetState())
        samples = state.parser.parse(text)
        t_ms = int(now_s * 1000)
        base = target.target_labels()
        seen: set[Labels] = set()
        keys = state.keys
        batch: list[tuple[Labels, float]] = []
        append = batch.append
        for series_text, name, labels, value in samples:
            key = keys.get(series_text)
            if key is None:
                merged = {}
                for k, v in labels.items():
                    merged[f"exported_{k}" if k in base else k] = v
                merged.update(base)
                merged["__name__"] = name
                key = tuple(sorted((k, v) for k, v in merged.items() if v != ""))
                if len(keys) >= 100_000:
                    keys.clear()
                keys[series_text] = key
            append((key, value))
            seen.add(key)
        self.store.append_at(t_ms, batch)
        for gone in state.series - seen:
            self.store.mark_stale(gone, t_ms)
        state.series = seen
        return len(samples)

    def _end_series(self, target: ScrapeTarget, now_s: float) -> None:
        state = self._state.get(target.url)
        if state is None:
            return
        t_ms = int(now_s * 1000)
        for key in state.series:
            self.store.mark_stale(key, t_ms)
        state.series = set()

    def _store_meta(self, target: ScrapeTarget, now_s: float, up: bool, duration_s: float, count: int) -> None:
        t_ms = int(now_s * 1000)
        base = target.target_labels()
        state = self._state.setdefault(target.url, _TargetState())
        for name, value in (("up", 1.0 if up else 0.0), ("scrape_duration_seconds", duration_s), ("scrape_samples_scraped", float(count))):
            key = tuple(sorted({**base, "__name__": name}.items()))
            self.store.append(key, t_ms, value)
            state.meta.add(key)

    async def run(self, targets_fn: Callable[[], Iterable[ScrapeTarget]], interval_s: float, clock: Clock) -> None:
        """Scrape every ``interval_s`` until cancelled; a slow round never delays the next start."""
        while True:
            started = clock.now()
            try:
                await self.scrape_all(targets_fn(), clock.wall())
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - one bad round must not end scraping
                log.exception("scrape_round_failed")
            await clock.sleep(max(0.0, interval_s - (clock.now() - started)))
