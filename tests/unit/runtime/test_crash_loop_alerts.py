"""One crash-looping replica raises one alert: LichenCrashLooping, once, not a LichenScrapeFailing per port.

The observability stack of `lichen up` (``Observing``: its scrape targets, the real scraper, series
store and rule manager with the default pack) runs on a fake clock against a scripted crash loop:
each start of the replica gets a new port and is scraped once before it listens (the process is
still starting), becomes ready, serves a few scrapes and crashes. The controller's own metrics
(backoff gauge, restart counter) come from a scripted page. No sockets.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace

from prometheus_client import CollectorRegistry

from lichen.control.probing import initial_state
from lichen.observe.scraping import Scraper
from lichen.runtime.observing import FetchedPage, Observing
from lichen.spec.models import AppSpec, ServiceSpec
from lichen.testing.clocks import FakeClock

SCRAPE_S = 5
CONTROLLER_URL = "http://127.0.0.1:7000/metrics"


@dataclass
class CrashLoop:
    """One replica that crashes 14 s after each start; restarts back off 0, 10, 20, 40, ... s as in Kubernetes.

    Each start lands on a scrape: the process is not listening yet, so a scrape of it fails. The
    controller learns of each exit at once (SIGCHLD), as the real one does.
    """

    started_at: float = 0.0
    port: int = 20000
    crashes: int = 0
    restarts: int = 0
    phase: str = "running"
    restart_at: float = 0.0
    listening: set[int] = field(default_factory=set)

    def step(self, t: float, replica: SimpleNamespace) -> None:
        age = t - self.started_at
        if self.phase == "running":
            if 1 <= age < 14:
                self.listening.add(self.port)
            else:
                self.listening.discard(self.port)  # not yet listening, or dead
            if age >= 2 and not replica.readiness.ever_passed:
                replica.readiness = replace(replica.readiness, passing=True, ever_passed=True)
            if age >= 14:
                self.phase, self.crashes = "exited", self.crashes + 1
                backoff_s = 0.0 if self.crashes <= 1 else min(300.0, 10.0 * 2 ** (self.crashes - 2))
                self.restart_at = math.ceil((t + backoff_s) / SCRAPE_S) * SCRAPE_S
        elif t >= self.restart_at:
            self.phase, self.started_at, self.port, self.restarts = "running", t, self.port + 1, self.restarts + 1
            replica.readiness = initial_state("readiness")
        replica.record.phase, replica.record.port = self.phase, self.port
        replica.handle = object() if self.phase == "running" else None

    def controller_page(self) -> str:
        looping = 1 if self.phase == "exited" and self.crashes >= 2 else 0
        return (f'lichen_replica_crashlooping{{service="api",replica="api-0"}} {looping}\n'
                f'lichen_replica_restarts_total{{service="api"}} {self.restarts}\n')


class FakeFetcher:
    def __init__(self, loop: CrashLoop) -> None:
        self.loop = loop

    async def get(self, url: str) -> FetchedPage:
        if url == CONTROLLER_URL:
            return FetchedPage(200, self.loop.controller_page())
        port = int(url.split(":")[2].split("/")[0])
        if port not in self.loop.listening:
            raise OSError("connection refused")
        return FetchedPage(200, 'lichen_inflight_requests{endpoint="predict"} 0\n')


def run_crash_loop(tmp_path: Path, minutes: float) -> list[set[tuple[str, frozenset]]]:
    """The alerts (pending or firing) after each scrape-and-evaluate round."""
    spec = AppSpec.model_validate({"app": "shop", "services": {"api": {"entrypoint": "shop.api:Api"}}})
    record = SimpleNamespace(id="api-0", service="api", revision="r1", phase="running", port=20000)
    replica = SimpleNamespace(record=record, handle=object(), readiness=initial_state("readiness"))
    controller = SimpleNamespace(
        workspace=SimpleNamespace(app_dir=tmp_path), clock=FakeClock(start=0.0), replicas={"api-0": replica},
        metrics=CollectorRegistry(), gateway=None, add_periodic=lambda *a: None,
        spec_of=lambda r: ServiceSpec(entrypoint="shop.api:Api"),
    )
    observing = Observing(controller, spec, token=None)
    assert observing.fused  # evaluation right after each scrape, as under `lichen up` by default
    loop = CrashLoop()
    observing.scraper = observing.pipeline.scraper = Scraper(observing.store, client=FakeFetcher(loop))
    observing.set_target("controller", CONTROLLER_URL, job="controller")
    seen = []

    async def main() -> None:
        for t in range(int(minutes * 60)):
            loop.step(float(t), replica)
            if t % SCRAPE_S == 0:
                await observing.scrape_round()
                seen.append({(a.labels["alertname"], frozenset(a.labels.items()))
                             for a in observing.rules.alerts(include_resolved=False)})
            controller.clock.advance(1.0)

    asyncio.run(main())
    assert loop.restarts >= 5, "the script must really crash loop"
    return seen


def test_one_crash_looping_replica_raises_one_alert(tmp_path: Path) -> None:
    rounds = run_crash_loop(tmp_path, minutes=20)
    raised = set().union(*rounds)
    assert {name for name, _ in raised} == {"LichenCrashLooping"}, sorted(name for name, _ in raised)
    (alert,) = raised  # one label set: one alert, never re-raised under another
    assert dict(alert[1])["replica"] == "api-0"
    # raised once: from its first appearance to the end it never resolved and came back
    first = next(i for i, r in enumerate(rounds) if r)
    assert all(r == {alert} for r in rounds[first:])


def scrape_failing_alerts(up_by_instance: dict[str, list[float | None]]) -> list[list[tuple[str, str]]]:
    """(instance, state) of the LichenScrapeFailing alerts after each 5 s round, for `up` per instance
    (None: not a target then)."""
    from lichen.observe.default_rules import default_rules_yaml
    from lichen.observe.promql import Engine
    from lichen.observe.rules import RuleManager
    from lichen.observe.series import SeriesStore

    spec = AppSpec.model_validate({"app": "shop", "services": {"api": {"entrypoint": "shop.api:Api"}}})
    store = SeriesStore()
    rules = RuleManager(store, Engine(store))
    rules.load_text(default_rules_yaml(spec))
    start_s, out = 1_700_000_000.0, []
    for k in range(max(len(v) for v in up_by_instance.values())):
        t_s = start_s + k * SCRAPE_S
        for instance, values in up_by_instance.items():
            labels = {"__name__": "up", "service": "api", "instance": instance, "job": "replica"}
            if k < len(values) and values[k] is not None:
                store.append(labels, int(t_s * 1000), values[k])
            elif k == len(values) or (k < len(values) and values[k - 1] is not None):
                store.mark_stale(labels, int(t_s * 1000))  # the scraper ends a target's series when it goes
        rules.evaluate_due(t_s)
        out.append([(a.labels["instance"], a.state) for a in rules.alerts(include_resolved=False)
                    if a.rule == "LichenScrapeFailing"])
    return out


def test_a_target_that_is_gone_raises_no_scrape_failing_for_its_old_port() -> None:
    # a replica failed 3 of its 20 scrapes (hung, killed by liveness) and runs again on a new port
    rounds = scrape_failing_alerts({"127.0.0.1:20000": [1.0] * 17 + [0.0] * 3,
                                    "127.0.0.1:20001": [None] * 20 + [1.0] * 140})
    assert rounds[-1] == [] and all(r == [] for r in rounds[20:]), [r for r in rounds if r][:1]


def test_a_flapping_target_that_is_still_scraped_fires_scrape_failing() -> None:
    flapping = [0.0 if k % 4 == 3 else 1.0 for k in range(160)]  # every 4th scrape fails: 75 % succeed
    rounds = scrape_failing_alerts({"127.0.0.1:20000": flapping})
    assert rounds[-1] == [("127.0.0.1:20000", "firing")]  # `for: 5m` held through its failed scrapes too
