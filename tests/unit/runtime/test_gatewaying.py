"""The gateway under the controller, over the in-memory process, probe and HTTP twins, on virtual time
(:class:`lichen.testing.VirtualTimeLoop`: backoffs, probe periods and confirmation timeouts are the real
ones and are checked exactly); and its config rendering."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import pytest

from lichen.control.draining import CONFIRM_TIMEOUT_S
from lichen.control.probing import STARTUP_POLL_S
from lichen.control.plans import Machine
from lichen.control.traffic_splits import revision_weights
from lichen.gateway.configs import load_config
from lichen.runtime.controlling import Controller
from lichen.runtime.endpoints import Endpoint
from lichen.runtime.gatewaying import (CONFIG_CHECK_S, PROBE, RESTART, attach_gateway, config_path,
                                      idempotent_paths_of, local_url, render)
from lichen.runtime.observing import FetchedPage
from lichen.runtime.state import StateStore
from lichen.runtime.workspaces import Workspace
from lichen.spec.models import AppSpec
from lichen.testing import FakeLauncher, FakeProber, LoopClock, run_in_virtual_time, until

START = 1000.0  # where virtual time starts: the controller's periodic tasks tick from here
WALL = LoopClock().wall_offset


def app_spec(port: int = 18080, **gateway: object) -> AppSpec:
    return AppSpec.model_validate({
        "app": "t",
        "gateway": {"port": port, **gateway},
        "services": {
            "web": {"entrypoint": "svc:Svc", "termination_grace_s": 1, "replicas": 2,
                    "max_inflight": 7, "timeout_s": 3, "routes": [{"prefix": "/v1/web", "strip_prefix": True}]},
            "api": {"entrypoint": "svc:Svc", "termination_grace_s": 1},
        },
    })


class GatewayTwin:
    """The controller's HTTP seam: answers ``GET /-/config`` as a gateway that has loaded the config file on
    disk (while ``answering``), and ``GET /.well-known/lichen`` as replicas whose POST /predict is idempotent."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.answering = False

    async def get(self, url: str) -> FetchedPage:
        if url.endswith("/.well-known/lichen"):
            return FetchedPage(200, json.dumps({"endpoints": [{"path": "/predict", "method": "POST",
                                                                "idempotent": True}]}))
        assert url.endswith("/-/config")
        if not self.answering:
            raise OSError("connection refused")
        return FetchedPage(200, json.dumps({"generation": load_config(self.path).generation}))


def controller_with_gateway(tmp_path: Path, launcher: FakeLauncher, prober: FakeProber,
                            answering: bool = True) -> tuple[Controller, GatewayTwin]:
    store = StateStore(tmp_path / "state.db")
    controller = Controller(Workspace(tmp_path), store, launcher=launcher, prober=prober, clock=LoopClock(),
                            machine=Machine(cpu_cores=4, memory_bytes=8 * 2**30, gpu_indices=()))
    controller.apply(app_spec(), "code1")
    gateway = attach_gateway(controller)
    twin = gateway.fetcher = GatewayTwin(config_path(controller.workspace))
    twin.answering = answering
    return controller, twin


def at(event) -> float:
    """An event's time on the loop's clock."""
    return event.at - WALL


def events(controller: Controller, service: str, kind: str) -> list:
    return [e for e in controller.store.events(service, limit=1000) if e.kind == kind]


def test_revision_weights_follow_ready_counts_unless_overridden() -> None:
    assert revision_weights({"r1": 3}) == {}
    assert revision_weights({"r1": 2, "r2": 1}) == {"r1": 2.0, "r2": 1.0}
    assert revision_weights({"r1": 2, "r2": 0}) == {}
    assert revision_weights({"r1": 2, "r2": 1}, {"r2": 5, "r1": 95}) == {"r1": 95.0, "r2": 5.0}


def test_render_from_spec_and_registry(tmp_path: Path) -> None:
    spec = app_spec(auth={"jwt": {"algorithm": "RS256", "jwks_file": "keys/jwks.json"}})
    endpoints = [Endpoint("web", "r1", "web-r1-0", "127.0.0.1", 9001), Endpoint("web", "r1", "web-r1-1", "127.0.0.1", 9002),
                 Endpoint("web", "r2", "web-r2-0", "127.0.0.1", 9003)]
    config = render(spec, Workspace(tmp_path), endpoints, {}, {"web": ["/predict"]})
    web = config.services["web"]
    assert [e.url for e in web.endpoints] == ["http://127.0.0.1:9001", "http://127.0.0.1:9002", "http://127.0.0.1:9003"]
    assert web.revision_weights == {"r1": 2.0, "r2": 1.0}  # rolling update: by ready replicas per revision
    assert (web.max_inflight, web.timeout_s, web.idempotent_paths) == (7, 3.0, ["/predict"])
    assert config.services["api"].endpoints == [] and config.services["api"].revision_weights == {}
    assert {r.prefix: r.service for r in config.routes} == {"/v1/web": "web", "/api": "api"}
    assert (config.host, config.port) == ("127.0.0.1", 18080)
    assert config.keys_db == str(tmp_path / ".lichen" / "keys.db")
    assert config.settings.auth.jwt is not None and config.settings.auth.jwt.jwks_file == str(tmp_path / "keys/jwks.json")
    pinned = render(spec, Workspace(tmp_path), endpoints, {"web": {"r2": 1.0}}, {})
    assert pinned.services["web"].revision_weights == {"r2": 1.0}


def test_idempotent_paths_from_the_well_known_document() -> None:
    doc = {"endpoints": [{"path": "/a", "method": "POST", "idempotent": True},
                         {"path": "/b", "method": "POST", "idempotent": False},
                         {"path": "/c", "method": "GET", "idempotent": True}]}
    assert idempotent_paths_of(doc) == ["/a"]
    assert idempotent_paths_of("nonsense") == [] and idempotent_paths_of({"endpoints": None}) == []


def test_gateway_is_supervised_and_its_config_follows_the_registry(tmp_path: Path) -> None:
    launcher, prober = FakeLauncher(), FakeProber()

    async def scenario() -> None:
        controller, _twin = controller_with_gateway(tmp_path, launcher, prober)
        gateway = controller.gateway
        clock = controller.clock
        task = asyncio.create_task(controller.run())

        def gateways() -> list:
            return [p for p in launcher.by_replica("gateway")]

        await until(lambda: len(gateways()) == 1, "the gateway to start")
        assert config_path(controller.workspace).exists()  # written before the gateway process started
        argv, env = gateways()[0].request.argv, gateways()[0].request.env
        assert argv[-3:] == ["gateway", "--config", str(config_path(controller.workspace))]
        assert env["LICHEN_CONTROLLER"] == str(tmp_path) and env["LICHEN_COMPANION"] == "gateway"
        assert "LICHEN_REPLICA" not in env

        def config_endpoints(service: str) -> int:
            return len(load_config(config_path(controller.workspace)).services[service].endpoints)

        await until(lambda: config_endpoints("web") == 2 and config_endpoints("api") == 1, "endpoints in the config")
        await until(lambda: gateway.status()["state"] == "Ready", "the gateway ready")
        record = json.loads((tmp_path / ".lichen" / "gateway.process.json").read_text())
        assert record["pid"] == gateways()[0].pid and record["port"] == 18080
        await until(lambda: load_config(config_path(controller.workspace)).services["web"].idempotent_paths
                    == ["/predict"], "idempotent paths read from a ready replica")

        # unchanged registry: no rewrite
        writes = gateway.config_writes
        await asyncio.sleep(CONFIG_CHECK_S * 4)
        assert gateway.config_writes == writes

        # scale down: written once the registry changes
        controller.scale("web", 1)
        await until(lambda: config_endpoints("web") == 1, "the removed endpoint to leave the config")

        # the canary hook
        revision = controller.services["web"].revision
        gateway.set_revision_weights("web", {revision: 1.0})
        await until(lambda: load_config(config_path(controller.workspace)).services["web"].revision_weights
                    == {revision: 1.0}, "override weights in the config")

        # liveness: a gateway that stops answering its health check is killed and restarted
        checks = PROBE.period_s  # once answered, health checks run every period from the last one
        last = gateway.readiness.last_started_at
        hangs_at = last + checks * math.ceil((clock.now() - last) / checks) + checks / 2
        await asyncio.sleep(hangs_at - clock.now())
        prober.answers[(18080, "/-/healthz")] = "timeout"
        await until(lambda: len(gateways()) == 2, "a restarted gateway")
        (killed,) = events(controller, "gateway", "Killed")
        assert at(killed) == pytest.approx(hangs_at + checks / 2 + (PROBE.failure_threshold - 1) * checks)  # 3rd fail
        assert at(events(controller, "gateway", "Started")[1]) == at(killed)  # first crash: restarted at once
        assert "SIGHUP" in gateways()[0].signals  # each new table: reload now
        assert [s for s in gateways()[0].signals if s != "SIGHUP"] == ["SIGKILL"]
        prober.answers.clear()
        answers_at = clock.now()
        await until(lambda: gateway.status()["state"] == "Ready" and gateway.status()["restarts"] == 1,
                    "the restarted gateway ready")
        # a restarted gateway is polled every 0.1 s until it first answers, not every period
        assert at(events(controller, "gateway", "Ready")[-1]) - answers_at <= STARTUP_POLL_S + 1e-6

        # a changed listen address restarts it at once
        controller.apply(app_spec(port=18081), "code1")
        await until(lambda: len(gateways()) == 3 and gateway.status()["port"] == 18081, "a gateway on the new port")
        assert [s for s in gateways()[1].signals if s != "SIGHUP"] == ["SIGTERM"]
        assert load_config(config_path(controller.workspace)).port == 18081

        controller.shutdown()
        await asyncio.wait_for(task, 60)
        assert launcher.alive() == [] and [s for s in gateways()[2].signals if s != "SIGHUP"] == ["SIGTERM"]
        controller.store.close()

    run_in_virtual_time(scenario())


def test_a_crash_looping_gateway_backs_off_without_stalling_the_controller(tmp_path: Path) -> None:
    launcher, prober = FakeLauncher(), FakeProber()

    async def scenario() -> None:
        controller, _twin = controller_with_gateway(tmp_path, launcher, prober)
        gateway = controller.gateway
        task = asyncio.create_task(controller.run())

        def gateways() -> list:
            return launcher.by_replica("gateway")

        for n in (1, 2):  # the first restart is immediate, the second waits (CrashLoopBackOff)
            await until(lambda: len(gateways()) == n and gateways()[-1].returncode is None, f"gateway start {n}")
            launcher.exit(gateways()[-1].pid, 1)
        await until(lambda: gateway.status()["state"] == "CrashLoopBackOff", "the gateway in backoff")
        status = gateway.status()
        assert status["last_exit_code"] == 1 and 0 < status["restart_in_s"] <= RESTART.initial_backoff_s
        assert len(gateways()) == 2
        passes = controller.passes
        await until(lambda: controller.passes > passes, "a controller pass while the gateway backs off")
        await until(lambda: len(gateways()) == 3, "the restart after the backoff")
        exits, starts = events(controller, "gateway", "Exited"), events(controller, "gateway", "Started")
        assert [at(start) - at(exit) for exit, start in zip(exits, starts[1:])] == [0.0, RESTART.initial_backoff_s]
        controller.shutdown()
        await asyncio.wait_for(task, 60)
        assert launcher.alive() == []
        controller.store.close()

    run_in_virtual_time(scenario())


def test_a_stopping_replica_gets_sigterm_only_once_the_gateway_confirms_a_table_without_it(tmp_path: Path) -> None:
    launcher, prober = FakeLauncher(), FakeProber()

    async def scenario() -> None:
        controller, twin = controller_with_gateway(tmp_path, launcher, prober, answering=False)
        gateway = controller.gateway
        store = controller.store
        task = asyncio.create_task(controller.run())

        def web_endpoints() -> list[str]:
            if not config_path(controller.workspace).exists():
                return []
            return [e.replica for e in load_config(config_path(controller.workspace)).services["web"].endpoints]

        def web_processes() -> list:
            return [p for p in launcher.processes.values() if p.request.name.startswith("web-")]

        await until(lambda: len(web_endpoints()) == 2 and gateway.status()["state"] == "Ready", "two ready replicas")
        assert gateway.status()["table_confirmed"] is False  # lichen up --wait keeps waiting for this
        twin.answering = True
        await until(lambda: gateway.confirmed_version == controller.endpoints.version, "the table confirmed")
        assert gateway.status()["table_confirmed"] is True
        twin.answering = False
        controller.scale("web", 1)
        await until(lambda: len(web_endpoints()) == 1, "a table without the stopping replica")
        gone = next(p for p in web_processes() if p.request.name not in web_endpoints())
        await asyncio.sleep(CONFIRM_TIMEOUT_S / 2)
        assert gone.signals == [] and gateway.confirmed_version < controller.endpoints.version  # not yet confirmed

        twin.answering = True  # the gateway confirms: SIGTERM follows
        await until(lambda: gone.signals == ["SIGTERM"], "SIGTERM after the confirmation")
        assert gateway.confirmed_version == controller.endpoints.version
        stopping = events(controller, "web", "Stopping")
        assert "the gateway confirmed it no longer routes here" in stopping[-1].message

        # a gateway that stops answering holds a stop only until the confirmation timeout
        twin.answering = False
        controller.scale("web", 0)
        await until(lambda: web_endpoints() == [], "an empty table")
        await until(lambda: sum(p.signals == ["SIGTERM"] for p in web_processes()) == 2, "SIGTERM after the timeout")
        withdrawn = [e for e in events(controller, "web", "Unready") if e.reason == "stopping"][-1]
        timed_out = events(controller, "web", "Stopping")[-1]
        assert f"did not confirm within {CONFIRM_TIMEOUT_S:g}s" in timed_out.message
        assert at(timed_out) - at(withdrawn) == CONFIRM_TIMEOUT_S  # withdrawn, then SIGTERM exactly at the timeout

        # lichen down: the gateway stops first and finishes its requests, then the replicas get SIGTERM
        controller.shutdown()
        await asyncio.wait_for(task, 60)
        events_in_order = store.events(None, 500)  # oldest first
        gateway_stopped = next(i for i, e in enumerate(events_in_order) if e.service == "gateway" and e.kind == "Stopped")
        api_stopping = next(i for i, e in enumerate(events_in_order) if e.service == "api" and e.kind == "Stopping")
        assert gateway_stopped < api_stopping
        assert "the gateway stopped" in events_in_order[api_stopping].message
        store.close()

    run_in_virtual_time(scenario())


def test_local_url_reaches_a_wildcard_by_loopback_and_brackets_an_ipv6_literal() -> None:
    assert local_url("0.0.0.0", 8080) == "http://127.0.0.1:8080"
    assert local_url("::", 8080) == "http://127.0.0.1:8080"
    assert local_url("::1", 8080) == "http://[::1]:8080"
    assert local_url("10.0.0.5", 80) == "http://10.0.0.5:80"
