"""Alert delivery end to end: real replicas -> scraper -> rules -> notifier -> a real webhook receiver.

Two `lichen serve` replicas answer a steady load; the test makes them return
500s, and checks that the firing alert reaches a webhook receiver on loopback
with Alertmanager's v4 payload within ``for + group_wait + 2 scrape
intervals``, then that the resolved notification arrives after recovery. In a
second round the receiver is down while the alert fires and still gets both
notifications once it is back.

The pipeline runs on a stepped clock: every cycle scrapes, evaluates and
notifies at ``now = start + k × scrape interval``, and a cycle starts only
after the load generator has made progress. Time limits are therefore
checked on the pipeline's own clock, never as wall-clock assertions, so a
loaded CI machine cannot make the test flaky.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from lichen.control.notifying import RouteConfig
from lichen.observe.notifications import NotificationStore, Notifier, Receiver, parse_rfc3339
from lichen.observe.promql import Engine
from lichen.observe.rules import RuleManager
from lichen.observe.scraping import Scraper, ScrapeTarget
from lichen.observe.series import SeriesStore
from lichen.observe.silences import SilenceStore
from webhook_receivers import WebhookReceiver
from waiting import free_port, wait_until

pytestmark = pytest.mark.slow
APPS = Path(__file__).resolve().parent / "apps"
LICHEN = [sys.executable, "-c", "from lichen.cli.main import run; run()"]
SCRAPE_S = 0.5
FOR_S = 2.0
ROUTE = RouteConfig(group_by=("alertname", "service"), group_wait_s=1.0, group_interval_s=2.0, repeat_interval_s=3600)
RULES = f"""
groups:
- name: delivery
  interval: 500ms
  rules:
  - alert: HighErrorRatio
    expr: |
      sum by (service) (rate(lichen_requests_total{{status=~"5.."}}[2s]))
      / sum by (service) (rate(lichen_requests_total[2s])) > 0.2
    for: {FOR_S:g}s
    labels: {{severity: warning}}
    annotations:
      summary: "{{{{ $labels.service }}}} answers 5xx"
"""


class Load:
    """Sends GET /predict to every replica in a loop; counts responses by status."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.count = 0
        self.by_status: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                for port in self.ports:
                    try:
                        status = client.get(f"http://127.0.0.1:{port}/predict").status_code
                    except httpx.HTTPError:
                        status = 0
                    self.by_status[status] = self.by_status.get(status, 0) + 1
                    self.count += 1
                time.sleep(0.005)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


@pytest.fixture
def replicas(tmp_path: Path):
    flag = tmp_path / "fail"
    procs, ports = [], []
    env = {**os.environ, "FLAKY_FLAG": str(flag)}
    for i in range(2):
        port = free_port()
        log = (tmp_path / f"replica-{i}.log").open("wb")
        procs.append(
            subprocess.Popen(
                [*LICHEN, "serve", "flaky_model:Flaky", "--port", str(port), "--app-dir", str(APPS),
                 "--log-level", "warning"],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )
        )
        ports.append(port)

    def ready(port: int, proc: subprocess.Popen) -> bool:
        assert proc.poll() is None, "replica exited early"
        try:
            return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        for port, proc in zip(ports, procs, strict=True):
            wait_until(lambda p=port, pr=proc: ready(p, pr), f"replica on {port} to be ready")
        yield ports, flag
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)


class Pipeline:
    """Scrape -> evaluate -> notify, one cycle per SCRAPE_S of pipeline time."""

    def __init__(self, ports: list[int], hook: WebhookReceiver, db: Path, load: Load) -> None:
        self.store = SeriesStore()
        self.rules = RuleManager(self.store, Engine(self.store))
        self.rules.load_text(RULES)
        self.scraper = Scraper(self.store, timeout_s=5.0)
        self.targets = [
            ScrapeTarget(f"http://127.0.0.1:{p}/metrics", service="model", revision="r1", replica=f"model-{i}")
            for i, p in enumerate(ports)
        ]
        self.notifier = Notifier(
            receivers=[Receiver("hook", "webhook", f"http://127.0.0.1:{hook.port}/hook")],
            store=NotificationStore(db), silences=SilenceStore(db), route=ROUTE,
            backoff_base_s=0.5, backoff_max_s=1.0, timeout_s=5.0,
        )
        self.load = load
        self.now = float(int(time.time()))

    async def cycle(self) -> None:
        seen = self.load.count
        await asyncio.to_thread(wait_until, lambda: self.load.count >= seen + 4, "load progress")
        self.now += SCRAPE_S
        await self.scraper.scrape_all(self.targets, self.now)
        self.rules.evaluate_due(self.now)
        await self.notifier.process(self.rules.firing(), self.now)

    async def until(self, predicate, what: str, max_cycles: int = 200) -> float:
        for _ in range(max_cycles):
            await self.cycle()
            if predicate():
                return self.now
        pytest.fail(f"{what} did not happen within {max_cycles} cycles")

    async def close(self) -> None:
        await self.scraper.aclose()
        await self.notifier.aclose()


def test_firing_and_resolved_notifications_reach_the_webhook(replicas, tmp_path: Path) -> None:
    ports, flag = replicas
    hook = WebhookReceiver()
    hook.start()
    load = Load(ports)
    load.start()

    async def scenario() -> None:
        pipe = Pipeline(ports, hook, tmp_path / "state.db", load)
        try:
            # healthy traffic first: no alert
            for _ in range(12):
                await pipe.cycle()
            assert pipe.rules.firing() == [] and hook.bodies == []

            # round 1: the replicas fail; the receiver is up
            flag.touch()
            failed_at = pipe.now
            await asyncio.to_thread(wait_until, lambda: load.by_status.get(500, 0) >= 10, "500 responses")
            arrived = await pipe.until(lambda: any(b["status"] == "firing" for b in hook.bodies), "firing")
            assert arrived - failed_at <= FOR_S + ROUTE.group_wait_s + 2 * SCRAPE_S + 1e-9
            firing = next(b for b in hook.bodies if b["status"] == "firing")
            assert firing["version"] == "4" and firing["receiver"] == "hook"
            assert firing["groupLabels"] == {"alertname": "HighErrorRatio", "service": "model"}
            assert firing["commonLabels"] == {"alertname": "HighErrorRatio", "service": "model", "severity": "warning"}
            assert firing["commonAnnotations"] == {"summary": "model answers 5xx"}
            (alert,) = firing["alerts"]
            assert alert["status"] == "firing" and alert["endsAt"] == "0001-01-01T00:00:00Z"
            assert failed_at < parse_rfc3339(alert["startsAt"]) <= arrived

            flag.unlink()
            recovered_at = pipe.now
            await pipe.until(lambda: any(b["status"] == "resolved" for b in hook.bodies), "resolved")
            resolved = next(b for b in hook.bodies if b["status"] == "resolved")
            assert resolved["alerts"][0]["fingerprint"] == alert["fingerprint"]
            assert parse_rfc3339(resolved["alerts"][0]["endsAt"]) > recovered_at

            # round 2: the receiver is down while the alert fires and resolves
            hook.stop()
            delivered_before = len(hook.bodies)
            flag.touch()
            await pipe.until(lambda: bool(pipe.rules.firing()), "the second firing")
            await pipe.until(
                lambda: any(i.attempts >= 2 for i in pipe.notifier.store.pending()), "failed delivery attempts"
            )
            flag.unlink()
            await pipe.until(lambda: not pipe.rules.firing(), "the second resolution")
            await pipe.until(lambda: len(pipe.notifier.store.pending()) >= 2, "the resolved notification queued")
            assert len(hook.bodies) == delivered_before
            hook.start()
            await pipe.until(lambda: not pipe.notifier.store.pending(), "the outbox to drain")
            assert [b["status"] for b in hook.bodies[delivered_before:]] == ["firing", "resolved"]
        finally:
            await pipe.close()

    try:
        asyncio.run(scenario())
    finally:
        load.stop()
        hook.stop()
