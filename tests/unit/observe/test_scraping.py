"""The scraper against real HTTP servers on loopback: labels, up, timeouts, failures, staleness."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from lichen.observe.promql import Engine
from lichen.observe.scraping import Scraper, ScrapeTarget
from lichen.observe.series import SeriesStore

METRICS = """# HELP lichen_requests_total Requests answered, by status.
# TYPE lichen_requests_total counter
lichen_requests_total{endpoint="/p",status="200"} 10
lichen_requests_total{endpoint="/p",status="500",instance="inner"} 2
# TYPE lichen_request_duration_seconds histogram
lichen_request_duration_seconds_bucket{le="0.1"} 3
lichen_request_duration_seconds_bucket{le="+Inf"} 4
lichen_request_duration_seconds_sum 0.5
lichen_request_duration_seconds_count 4
"""


class MetricsServer:
    """A tiny real HTTP/1.1 server: ``body`` is served at /metrics; ``delay_s`` and ``status`` misbehave on demand."""

    def __init__(self) -> None:
        self.body = METRICS
        self.delay_s = 0.0
        self.status = 200
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def __aenter__(self) -> MetricsServer:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    break
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                body = self.body.encode()
                writer.write(
                    f"HTTP/1.1 {self.status} X\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
                )
                await writer.drain()
        writer.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"


async def _scenario() -> None:
    store = SeriesStore()
    engine = Engine(store)
    scraper = Scraper(store, timeout_s=0.5)
    async with MetricsServer() as good, MetricsServer() as slow:
        slow.delay_s = 2.0
        targets = [
            ScrapeTarget(good.url, service="recs", revision="r1", replica="recs-0"),
            ScrapeTarget(slow.url, service="recs", revision="r1", replica="recs-1"),
            ScrapeTarget("http://127.0.0.1:9/metrics", service="gone", replica="gone-0"),
        ]
        t0 = 1_700_000_000.0
        results = await asyncio.wait_for(scraper.scrape_all(targets, t0), timeout=10)
        assert [r.up for r in results] == [True, False, False]
        assert results[0].samples == 6
        assert "Timeout" in (results[1].error or "")
        up = {s[0]["replica"]: s[1] for s in engine.instant_samples("up", t0)}
        assert up == {"recs-0": 1.0, "recs-1": 0.0, "gone-0": 0.0}
        [(labels, value)] = engine.instant_samples('lichen_requests_total{status="500"}', t0)
        assert value == 2.0
        assert labels["instance"] == f"127.0.0.1:{good.port}" and labels["exported_instance"] == "inner"
        assert labels["service"] == "recs" and labels["revision"] == "r1" and labels["replica"] == "recs-0"
        assert engine.instant_samples("scrape_samples_scraped{replica='recs-0'}", t0)[0][1] == 6.0
        assert engine.instant_samples("histogram_quantile(0.5, lichen_request_duration_seconds_bucket)", t0)
        meta = scraper.metadata()  # what /api/v1/metadata serves, for Grafana's metrics browser
        assert meta["lichen_requests_total"] == [{"type": "counter", "help": "Requests answered, by status.", "unit": ""}]
        assert meta["lichen_request_duration_seconds"] == [{"type": "histogram", "help": "", "unit": ""}]

        # a series that disappears, then a failing scrape, both end series at once (stale markers)
        good.body = METRICS.replace('lichen_requests_total{endpoint="/p",status="500",instance="inner"} 2\n', "")
        await scraper.scrape_all(targets[:1], t0 + 5)
        assert engine.instant_samples('lichen_requests_total{status="500"}', t0 + 5) == []
        assert engine.instant_samples("up{replica='recs-1'}", t0 + 5) == []  # target removed -> its up series ends too
        good.status = 500
        [failed] = await scraper.scrape_all(targets[:1], t0 + 10)
        assert not failed.up and "500" in (failed.error or "")
        assert engine.instant_samples("lichen_requests_total", t0 + 10) == []
        assert engine.instant_samples("up{replica='recs-0'}", t0 + 10)[0][1] == 0.0
    await scraper.aclose()


def test_scraper_against_real_http_targets() -> None:
    asyncio.run(_scenario())


def test_malformed_exposition_is_a_failed_scrape() -> None:
    async def run() -> None:
        store = SeriesStore()
        scraper = Scraper(store, timeout_s=1.0)
        async with MetricsServer() as srv:
            srv.body = "this is { not metrics\n"
            [result] = await scraper.scrape_all([ScrapeTarget(srv.url, service="s")], 100.0)
            assert not result.up and "malformed" in (result.error or "")
        await scraper.aclose()

    asyncio.run(run())


@pytest.mark.parametrize("instance", [None, "custom:1"])
def test_target_labels(instance: str | None) -> None:
    t = ScrapeTarget("http://10.0.0.1:8080/metrics", service="a", instance=instance)
    assert t.target_labels() == {"service": "a", "instance": instance or "10.0.0.1:8080"}


def test_pipeline_scrapes_evaluates_snapshots_and_restores_alert_state(tmp_path) -> None:
    from lichen.observe.collecting import MetricsPipeline
    from lichen.spec.models import ObservabilitySpec

    (tmp_path / "rules.yml").write_text(
        "groups: [{name: g, rules: [{alert: TargetDown, expr: 'up == 0', for: 30s},"
        " {record: 'service:up:sum', expr: 'sum by (service) (up)'}]}]\n"
    )
    spec = ObservabilitySpec(persist_path="state/series.npz", rules=["rules.yml"])

    async def run() -> None:
        async with MetricsServer() as srv:
            targets = [ScrapeTarget(srv.url, service="a", replica="a-0"), ScrapeTarget("http://127.0.0.1:9/metrics", service="b", replica="b-0")]
            t0 = 1_700_000_000.0
            first = MetricsPipeline.from_spec(spec, base_dir=tmp_path)
            result = await first.tick(targets, t0)
            assert [r.up for r in result.scrapes] == [True, False] and result.groups_evaluated == 1 and result.snapshotted
            await first.tick(targets, t0 + 10)
            assert [a.state for a in first.rules.alerts()] == ["pending"]
            first.close()
            await first.scraper.aclose()

            second = MetricsPipeline.from_spec(spec, base_dir=tmp_path)  # a controller restart
            assert second.engine.instant_samples('service:up:sum{service="a"}', t0 + 10) == [({"__name__": "service:up:sum", "service": "a"}, 1.0)]
            await second.tick(targets, t0 + 35)
            [alert] = second.rules.alerts()
            assert alert.state == "firing" and alert.active_at_s == t0  # `for` kept counting across the restart
            await second.scraper.aclose()

    asyncio.run(run())
    assert (tmp_path / "state" / "series.npz").exists()


def test_exposition_parser_caches_series_and_reads_values() -> None:
    from lichen.errors import DataError
    from lichen.observe.expositions import ExpositionParser

    parser = ExpositionParser()
    text = '# HELP x y\nx_total{path="/a b}",q="\\"x\\""} 3 1700000000000\nplain 4.5\nbig +Inf\nnan NaN\n'
    first = parser.parse(text)
    assert [(n, lab, v) for _, n, lab, v in first][:2] == [("x_total", {"path": "/a b}", "q": '"x"'}, 3.0), ("plain", {}, 4.5)]
    assert first[2][3] == float("inf") and first[3][3] != first[3][3]
    again = parser.parse(text.replace(" 3 ", " 7 "))
    assert again[0][3] == 7.0 and again[0][2] is first[0][2]  # labels parsed once
    for bad in ("x{a=\"b\"}\n", "x{a=\"b\"} notanumber\n", "x{a=b} 1\n"):
        with pytest.raises(DataError):
            ExpositionParser().parse(bad)
