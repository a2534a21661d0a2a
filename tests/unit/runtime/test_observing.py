"""Unit tests of the observability wiring under `lichen up` (lichen.runtime.observing), on a fake clock."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from lichen.control.probing import initial_state, record_probe
from lichen.runtime.observing import Observing, attach_observing
from lichen.spec.models import AppSpec, ProbeSpec, ServiceSpec
from lichen.testing.clocks import FakeClock


def _spec(*services: str, **observability: object) -> AppSpec:
    return AppSpec.model_validate({
        "app": "shop",
        "services": {name: {"entrypoint": f"shop.{name}:Svc"} for name in services},
        "observability": observability,
    })


def _replica(service: str, index: int, port: int | None, phase: str = "running", handle: object | None = True,
             ready: bool = True):
    record = SimpleNamespace(id=f"{service}-{index}", service=service, revision="r1", phase=phase, port=port)
    readiness = replace(initial_state("readiness"), passing=ready, ever_passed=ready)
    return SimpleNamespace(record=record, handle=object() if handle else None, readiness=readiness)


class FakeController:
    """What :class:`lichen.runtime.observing.ObservedController` asks of a controller."""

    def __init__(self, app_dir: Path) -> None:
        self.workspace = SimpleNamespace(app_dir=app_dir)
        self.clock = FakeClock()
        self.replicas: dict[str, SimpleNamespace] = {}
        self.metrics = CollectorRegistry()
        self.periodic: list[tuple[str, float, object]] = []
        self.gateway = None
        self.service_specs: dict[str, ServiceSpec] = {}

    def spec_of(self, record: SimpleNamespace) -> ServiceSpec:
        return self.service_specs.get(record.service, ServiceSpec(entrypoint="shop.svc:Svc"))

    def add_periodic(self, name: str, interval_s: float, fn: object) -> None:
        self.periodic.append((name, interval_s, fn))

    def status(self) -> dict:
        return {}


def test_targets_are_running_replicas_the_gateway_and_the_controller(tmp_path: Path) -> None:
    controller = FakeController(tmp_path)
    controller.replicas = {
        "api-0": _replica("api", 0, 4001),
        "api-1": _replica("api", 1, 4002, phase="exited"),
        "api-2": _replica("api", 2, None),
        "web-0": _replica("web", 0, 4003),
        "web-1": _replica("web", 1, 4004, handle=None),
    }
    controller.gateway = SimpleNamespace(url="http://127.0.0.1:8080",
                                         readiness=replace(initial_state("readiness"), passing=True, ever_passed=True))
    observing = Observing(controller, _spec("api", "web"), token="t", api_url="http://127.0.0.1:7000")
    targets = {t.url: t for t in observing.targets()}
    assert set(targets) == {"http://127.0.0.1:4001/metrics", "http://127.0.0.1:4003/metrics",
                            "http://127.0.0.1:8080/metrics", "http://127.0.0.1:7000/metrics"}
    assert targets["http://127.0.0.1:4001/metrics"].target_labels() == {
        "service": "api", "revision": "r1", "replica": "api-0", "instance": "127.0.0.1:4001", "job": "replica"}
    assert targets["http://127.0.0.1:8080/metrics"].target_labels() == {"instance": "127.0.0.1:8080", "job": "gateway"}
    assert targets["http://127.0.0.1:7000/metrics"].target_labels()["job"] == "controller"
    observing.set_target("extra", "http://127.0.0.1:9/metrics", job="x")
    assert "http://127.0.0.1:9/metrics" in {t.url for t in observing.targets()}
    observing.set_target("extra", None)
    assert len(observing.targets()) == 4
    assert observing.rules.external_url == "http://127.0.0.1:7000/dashboard/"  # $externalURL in alert templates


def test_a_replica_is_scraped_from_its_first_ready_probe_at_its_metrics_path(tmp_path: Path) -> None:
    controller = FakeController(tmp_path)
    controller.service_specs["api"] = ServiceSpec(entrypoint="shop.api:Api", metrics_path="/internal/metrics")
    starting = _replica("api", 0, 4001, ready=False)
    controller.replicas = {"api-0": starting, "web-0": _replica("web", 0, 4003)}
    observing = Observing(controller, _spec("api", "web"), token=None)
    urls = {t.url for t in observing.targets()}
    assert urls == {"http://127.0.0.1:4003/metrics"}  # still starting: a failed scrape would be a fake `up 0`

    probe = ProbeSpec(success_threshold=1, failure_threshold=1)
    starting.readiness = record_probe(starting.readiness, probe, "ok", 1.0)
    urls = {t.url for t in observing.targets()}
    assert urls == {"http://127.0.0.1:4001/internal/metrics", "http://127.0.0.1:4003/metrics"}

    starting.readiness = record_probe(starting.readiness, probe, "failed", 2.0)  # unready later: still scraped
    assert not starting.readiness.passing
    assert "http://127.0.0.1:4001/internal/metrics" in {t.url for t in observing.targets()}

    # the gateway too: scraped from its first passing health check on
    controller.gateway = SimpleNamespace(url="http://127.0.0.1:8080", readiness=initial_state("readiness"))
    assert "http://127.0.0.1:8080/metrics" not in {t.url for t in observing.targets()}
    controller.gateway.readiness = record_probe(controller.gateway.readiness, probe, "ok", 3.0)
    assert "http://127.0.0.1:8080/metrics" in {t.url for t in observing.targets()}


def test_default_rule_pack_and_rule_files_are_loaded(tmp_path: Path) -> None:
    (tmp_path / "rules.yml").write_text(
        "groups:\n- name: mine\n  interval: 250ms\n  rules:\n  - record: x:sum\n    expr: sum(up)\n")
    spec = _spec("api", evaluation_interval_s=0.5, scrape_interval_s=0.5, scrape_timeout_s=0.4, rules=["rules.yml"])
    observing = Observing(FakeController(tmp_path), spec, token=None)
    names = [g.name for g in observing.rules.groups]
    assert names == ["mine", "lichen-defaults-api", "lichen-defaults-scraping"]
    assert observing.rules.interval_of(observing.rules.groups[1]) == 0.5
    assert observing.evaluation_interval_s == 0.25  # the shortest group interval
    assert not observing.fused
    observing.attach()
    assert [name for name, _, _ in observing.controller.periodic] == ["metrics scrape", "rule evaluation"]

    plain = Observing(FakeController(tmp_path), _spec("api", default_rules=False), token=None)
    assert plain.rules.groups == [] and plain.fused


def test_apply_spec_keeps_unchanged_groups_and_their_state(tmp_path: Path) -> None:
    observing = Observing(FakeController(tmp_path), _spec("api", "web"), token=None)
    api = next(g for g in observing.rules.groups if g.name == "lichen-defaults-api")
    observing.apply_spec(_spec("api", "search"))
    names = sorted(g.name for g in observing.rules.groups)
    assert names == ["lichen-defaults-api", "lichen-defaults-scraping", "lichen-defaults-search"]
    assert next(g for g in observing.rules.groups if g.name == "lichen-defaults-api") is api


def test_reapplying_a_spec_reloads_rule_files_and_keeps_unchanged_groups(tmp_path: Path) -> None:
    (tmp_path / "rules.yml").write_text("groups:\n- name: mine\n  rules:\n  - alert: A\n    expr: vector(1)\n"
                                        "    for: 1h\n- name: other\n  rules:\n  - record: x\n    expr: vector(1)\n")
    spec = _spec("api", rules=["rules.yml"])
    observing = Observing(FakeController(tmp_path), spec, token=None)
    observing.rules.evaluate_due(observing.controller.clock.wall())
    [mine] = [g for g in observing.rules.groups if g.name == "mine"]
    assert mine.rules[0].active  # pending: `for: 1h`

    (tmp_path / "rules.yml").write_text("groups:\n- name: mine\n  rules:\n  - alert: A\n    expr: vector(1)\n"
                                        "    for: 1h\n- name: other\n  rules:\n  - record: x\n    expr: vector(2)\n"
                                        "- name: added\n  interval: 1s\n  rules:\n  - record: y\n    expr: vector(3)\n")
    report = observing.apply_spec(spec)
    assert report["rules"] == {"status": "applied", "changed": ["other (rules.yml)"], "added": ["added (rules.yml)"],
                               "removed": [], "unchanged": 3}
    assert report["notifications"]["status"] == "unchanged" and report["restart_needed"] == []
    assert next(g for g in observing.rules.groups if g.name == "mine") is mine  # alert state and `for` kept
    assert [r.expr for g in observing.rules.groups if g.name == "other" for r in g.rules] == ["vector(2)"]
    assert observing.evaluation_interval_s == 1.0  # a reloaded group's shorter interval sets the tick
    assert observing.apply_spec(spec)["rules"]["status"] == "unchanged"


def test_a_broken_rule_file_is_refused_whole_and_changes_nothing(tmp_path: Path) -> None:
    from lichen.runtime.observing import SpecRefused

    (tmp_path / "rules.yml").write_text("groups:\n- name: mine\n  rules:\n  - record: x\n    expr: vector(1)\n")
    spec = _spec("api", rules=["rules.yml"])
    observing = Observing(FakeController(tmp_path), spec, token=None)
    before = list(observing.rules.groups)
    (tmp_path / "rules.yml").write_text("groups:\n- name: mine\n  rules:\n  - record: x\n    expr: vector(2)\n"
                                        "- name: bad\n  rules:\n  - alert: B\n    expr: 'sum('\n    for: 1x\n")
    with pytest.raises(SpecRefused) as info:
        observing.apply_spec(_spec("api", "web", rules=["rules.yml"]))
    assert info.value.exit_code == 2
    assert [p.split(" ")[0] for p in info.value.problems] == [f"{tmp_path}/rules.yml:9", f"{tmp_path}/rules.yml:10"]
    assert "nothing was applied" in str(info.value)
    assert observing.rules.groups == before and observing.spec is spec  # not half-applied: not even `mine`
    assert [g.name for g in observing.rules.groups] == ["mine", "lichen-defaults-api", "lichen-defaults-scraping"]


def test_reapplying_receivers_route_and_inhibit_rules(tmp_path: Path) -> None:
    observing = Observing(FakeController(tmp_path), _spec("api"), token=None)
    assert observing.notifier is None
    hook = {"name": "oncall", "webhook": "http://127.0.0.1:9/hook"}
    report = observing.apply_spec(_spec("api", receivers=[hook], route={"group_wait_s": 1}))
    assert report["notifications"] == {"status": "applied", "receivers": ["oncall"]}
    notifier = observing.notifier
    assert notifier is not None and notifier.route.group_wait_s == 1 and list(notifier.receivers) == ["oncall"]
    report = observing.apply_spec(_spec("api", receivers=[{"log": True}], route={"group_wait_s": 2},
                                        inhibit_rules=[{"source_matchers": {"a": "b"}, "target_matchers": {"c": "d"}}]))
    assert observing.notifier is notifier and list(notifier.receivers) == ["log-0"]  # outbox and log kept
    assert notifier.route.group_wait_s == 2 and len(notifier.inhibit_rules) == 1
    report = observing.apply_spec(_spec("api", receivers=[{"log": True}], route={"group_wait_s": 2},
                                        inhibit_rules=[{"source_matchers": {"a": "b"}, "target_matchers": {"c": "d"}}],
                                        scrape_interval_s=1, scrape_timeout_s=1))
    assert report["notifications"]["status"] == "unchanged"
    assert report["restart_needed"] == ["observability.scrape_interval_s", "observability.scrape_timeout_s"]
    notifier.store.close()
    notifier.silences.close()


def test_ticks_run_at_a_fixed_rate_and_skip_overruns(tmp_path: Path) -> None:
    controller = FakeController(tmp_path)
    observing = Observing(controller, _spec("api"), token=None)
    clock = controller.clock
    ran: list[float] = []
    durations = iter([0.3, 0.3, 12.0, 0.1])

    async def work() -> None:
        ran.append(clock.now())
        clock.advance(next(durations))

    start = clock.now()
    tick = observing._ticker("scrape", 5.0, work)

    async def main() -> None:
        for _ in range(4):
            await tick()

    asyncio.run(main())
    # rounds start at start + k*5 regardless of their own duration; the 12 s round skips two ticks
    assert [round(t - start, 6) for t in ran] == [5.0, 10.0, 15.0, 30.0]
    assert observing.skipped == {"scrape": 2}


def test_own_cost_is_on_the_controller_metrics(tmp_path: Path) -> None:
    controller = FakeController(tmp_path)
    observing = Observing(controller, _spec("api"), token=None)
    asyncio.run(observing.evaluate_round())
    text = generate_latest(controller.metrics).decode()
    assert 'lichen_observe_round_seconds_count{kind="evaluate"} 1.0' in text
    assert "lichen_observe_series" in text


def test_off_switch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LICHEN_OBSERVE", "off")
    assert attach_observing(FakeController(tmp_path), _spec("api"), token=None) is None
    monkeypatch.setenv("LICHEN_OBSERVE", "on")
    controller = FakeController(tmp_path)
    observing = attach_observing(controller, _spec("api"), token=None)
    assert observing is not None and [name for name, *_ in controller.periodic] == ["metrics scrape"]


def test_stream_fetcher_reads_length_delimited_chunked_and_close_delimited_answers() -> None:
    from lichen.runtime.observing import StreamFetcher

    answers = {
        "/length": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nup 1\n",
        "/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nup \r\n2\r\n1\n\r\n0\r\n\r\n",
        "/close": b"HTTP/1.0 503 Service Unavailable\r\n\r\ndown",
        "/garbage": b"not http at all",
    }

    async def main() -> list:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            request = await reader.readuntil(b"\r\n\r\n")
            path = request.split()[1].decode()
            writer.write(answers[path])
            await writer.drain()
            if path != "/length":  # /length keeps the connection open: the fetcher must stop at Content-Length
                writer.close()
            else:
                await asyncio.sleep(5)

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        fetcher = StreamFetcher(timeout_s=2.0)
        out = []
        for path in ("/length", "/chunked", "/close"):
            page = await fetcher.get(f"http://127.0.0.1:{port}{path}")
            out.append((page.status_code, page.text))
        with pytest.raises(OSError):
            await fetcher.get(f"http://127.0.0.1:{port}/garbage")
        server.close()
        return out

    assert asyncio.run(main()) == [(200, "up 1\n"), (200, "up 1\n"), (503, "down")]


def test_persist_path_survives_a_restart(tmp_path: Path) -> None:
    spec = _spec("api", persist_path="metrics/snapshot.bin")
    first = Observing(FakeController(tmp_path), spec, token=None)
    t_ms = int(first.controller.clock.wall() * 1000)
    first.store.append({"__name__": "up", "service": "api", "replica": "api-0"}, t_ms, 1.0)
    asyncio.run(first.aclose())
    assert (tmp_path / "metrics" / "snapshot.bin").exists()
    second = Observing(FakeController(tmp_path), spec, token=None)
    assert second.engine.instant("up", t_ms / 1000)["result"][0]["metric"]["replica"] == "api-0"


def test_an_announced_alert_goes_to_the_receivers_at_once_and_resolves_after_its_time(tmp_path: Path) -> None:
    controller = FakeController(tmp_path)
    observing = Observing(controller, _spec("api"), token=None)
    observing.apply_spec(_spec("api", receivers=[{"log": True}], route={"group_wait_s": 0}))
    notifier = observing.notifier
    assert notifier is not None
    seen: list[list] = []
    process = notifier.process

    async def spy(alerts, now):  # noqa: ANN001, ANN202
        seen.append(list(alerts))
        return await process(alerts, now)

    notifier.process = spy  # type: ignore[method-assign]

    async def scenario() -> None:
        observing.announce("LichenCanaryAborted", {"service": "api", "severity": "warning"},
                           {"description": "b2 rolled back to a1: canary error ratio 30.0 % vs stable 0.0 %"},
                           for_s=60)
        assert observing._notify_task is not None
        await observing._notify_task

    asyncio.run(scenario())
    (alert,) = [a for a in seen[0] if isinstance(a, dict)]
    assert alert["labels"] == {"alertname": "LichenCanaryAborted", "app": "shop", "service": "api",
                               "severity": "warning"}
    assert "canary error ratio 30.0 %" in alert["annotations"]["description"]
    now = controller.clock.wall()
    assert observing.announced(now + 59) and observing.announced(now + 60) == []  # then the notifier resolves it
    notifier.store.close()
    notifier.silences.close()
