"""The metrics pipeline the controller runs: scrape, evaluate rules, snapshot — wired from the spec.

Interface (stable)::

    pipeline = MetricsPipeline.from_spec(spec.observability, base_dir=spec_dir, extra_groups=default_groups)
    result = await pipeline.tick(targets, now_s)   # one scrape round + due rule groups + due snapshot
    task = asyncio.create_task(pipeline.run(lambda: targets, clock))   # or run it forever
    router = pipeline.router()                     # Prometheus' query API for the control API app
    pipeline.close()                               # final snapshot

``pipeline.store``, ``.engine``, ``.rules`` and ``.scraper`` are the parts (see their modules).
``tick`` never raises for a failing target or rule; what failed is in the returned
:class:`TickResult`. ``now_s`` is Unix seconds (``clock.wall()``), the timestamp of the samples.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lichen.clocks import Clock
from lichen.logs import get_logger
from lichen.observe.promql import Engine
from lichen.observe.rule_files import RuleGroup
from lichen.observe.rules import RuleManager
from lichen.observe.scraping import Scraper, ScrapeResult, ScrapeTarget
from lichen.observe.series import SeriesStore

log = get_logger(__name__)


@dataclass
class TickResult:
    scrapes: list[ScrapeResult] = field(default_factory=list)
    groups_evaluated: int = 0
    rule_errors: dict[str, str] = field(default_factory=dict)
    snapshotted: bool = False


class MetricsPipeline:
    def __init__(
        self,
        store: SeriesStore,
        *,
        scrape_interval_s: float = 5.0,
        scrape_timeout_s: float = 2.0,
        evaluation_interval_s: float = 5.0,
        persist_path: Path | None = None,
        snapshot_interval_s: float = 60.0,
    ) -> None:
        self.store = store
        self.engine = Engine(store, subquery_step_s=evaluation_interval_s)  # Prometheus: a subquery without a step uses evaluation_interval
        self.rules = RuleManager(store, self.engine, default_interval_s=evaluation_interval_s)
        self.scraper = Scraper(store, timeout_s=scrape_timeout_s)
        self.scrape_interval_s = scrape_interval_s
        self.persist_path = persist_path
        self.snapshot_interval_s = snapshot_interval_s
        self._last_snapshot_s: float | None = None

    @classmethod
    def from_spec(
        cls,
        observability: Any,
        base_dir: str | Path = ".",
        extra_groups: Iterable[RuleGroup] = (),
        snapshot_interval_s: float = 60.0,
    ) -> MetricsPipeline:
        """Build from an ``ObservabilitySpec``: restores the snapshot at ``persist_path`` and loads ``rules`` files."""
        base = Path(base_dir)
        persist = None
        if observability.persist_path:
            persist = Path(observability.persist_path)
            if not persist.is_absolute():
                persist = base / persist
            store = SeriesStore.restore(persist, retention_s=observability.retention)
        else:
            store = SeriesStore(retention_s=observability.retention)
        pipeline = cls(
            store,
            scrape_interval_s=observability.scrape_interval_s,
            scrape_timeout_s=observability.scrape_timeout_s,
            evaluation_interval_s=observability.evaluation_interval_s,
            persist_path=persist,
            snapshot_interval_s=snapshot_interval_s,
        )
        pipeline.rules.load_files(p if Path(p).is_absolute() else base / p for p in observability.rules)
        pipeline.rules.add_groups(extra_groups)
        return pipeline

    async def tick(self, targets: Iterable[ScrapeTarget], now_s: float) -> TickResult:
        result = TickResult()
        result.scrapes = await self.scraper.scrape_all(targets, now_s)
        result.groups_evaluated = self.rules.evaluate_due(now_s)
        result.rule_errors = {r.name: r.last_error for g in self.rules.groups for r in g.rules if r.last_error}
        if self.persist_path is not None and (
            self._last_snapshot_s is None or now_s - self._last_snapshot_s >= self.snapshot_interval_s
        ):
            self.store.drop_expired(int(now_s * 1000))
            await asyncio.to_thread(self.store.snapshot, self.persist_path)
            self._last_snapshot_s = now_s
            result.snapshotted = True
        return result

    async def run(self, targets_fn: Callable[[], Iterable[ScrapeTarget]], clock: Clock) -> None:
        """Tick every scrape interval until cancelled; one failing round is logged, never fatal."""
        try:
            while True:
                started = clock.now()
                try:
                    await self.tick(targets_fn(), clock.wall())
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - keep collecting
                    log.exception("metrics_round_failed")
                await clock.sleep(max(0.0, self.scrape_interval_s - (clock.now() - started)))
        finally:
            await self.scraper.aclose()

    def router(self, clock: Clock | None = None) -> Any:
        from lichen.observe.http_api import build_query_router

        return build_query_router(
            self.store, self.engine, self.rules, clock=clock, metadata=lambda: self.scraper.metadata()
        )

    def close(self) -> None:
        if self.persist_path is not None:
            self.store.snapshot(self.persist_path)
