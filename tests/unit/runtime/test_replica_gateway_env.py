"""A replica learns where the gateway is and each service's base URL on it (the replica contract)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from lichen.control.plans import Machine
from lichen.runtime.controlling import Controller
from lichen.runtime.state import StateStore
from lichen.runtime.workspaces import Workspace
from lichen.sdk.settings import ReplicaSettings
from lichen.spec.models import AppSpec
from lichen.testing import FakeLauncher, FakeProber, LoopClock, run_in_virtual_time, until


class StubIngress:
    """The gateway as the controller sees it: only its URL matters here."""

    url = "http://127.0.0.1:8123"
    readiness = None

    def view(self) -> Any:
        raise AssertionError("drains are not confirmed in this test")

    def status(self) -> dict[str, Any]:
        return {}


def test_replicas_get_the_gateway_url_and_every_services_base_url(tmp_path: Path) -> None:
    launcher, prober = FakeLauncher(), FakeProber()
    spec = AppSpec.model_validate({"app": "t", "services": {
        "feedback": {"entrypoint": "svc:Svc", "routes": ["/v1/feedback"]},                   # not stripped: the root
        "sentiment": {"entrypoint": "svc:Svc"},                                               # default: /sentiment
        "api": {"entrypoint": "svc:Svc", "replicas": 0, "routes": [
            {"prefix": "/beta", "headers": {"x-beta": "1"}}, {"prefix": "/api/", "strip_prefix": True}]},
        "internal": {"entrypoint": "svc:Svc", "replicas": 0, "routes": [{"prefix": "/i", "host": "in.example"}]},
    }})

    async def scenario() -> None:
        controller = Controller(Workspace(tmp_path), StateStore(tmp_path / "state.db"), launcher=launcher,
                                prober=prober, clock=LoopClock(), machine=Machine(cpu_cores=4, memory_bytes=2**33))
        controller.confirm_drains = False
        controller.gateway = StubIngress()
        controller.apply(spec, "code1")
        task = asyncio.create_task(controller.run())
        await until(lambda: len(launcher.alive()) == 2, "two replicas")
        for process in launcher.alive():
            settings = ReplicaSettings.from_env(process.request.env)
            assert settings.gateway_url == "http://127.0.0.1:8123"
            # 'internal' has only a host-bound route: no base URL (call the gateway with its full path)
            assert settings.service_urls == {"feedback": "http://127.0.0.1:8123",
                                             "sentiment": "http://127.0.0.1:8123/sentiment",
                                             "api": "http://127.0.0.1:8123/api"}
        controller.shutdown()
        await asyncio.wait_for(task, 60)

    run_in_virtual_time(scenario())


def test_without_a_gateway_replicas_get_no_urls(tmp_path: Path) -> None:
    launcher = FakeLauncher()

    async def scenario() -> None:
        controller = Controller(Workspace(tmp_path), StateStore(tmp_path / "state.db"), launcher=launcher,
                                prober=FakeProber(), clock=LoopClock(), machine=Machine(cpu_cores=4, memory_bytes=2**33))
        controller.apply(AppSpec.model_validate({"app": "t", "services": {"web": {"entrypoint": "svc:Svc"}}}), "c")
        task = asyncio.create_task(controller.run())
        await until(lambda: len(launcher.alive()) == 1, "one replica")
        env = launcher.alive()[0].request.env
        assert "LICHEN_GATEWAY_URL" not in env and "LICHEN_SERVICE_URLS" not in env
        controller.shutdown()
        await asyncio.wait_for(task, 60)

    run_in_virtual_time(scenario())
