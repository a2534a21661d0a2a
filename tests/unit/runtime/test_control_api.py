"""The control API over a controller with in-memory process and probe twins, on virtual time
(:class:`lichen.testing.VirtualTimeLoop`: the controller and the API's requests share one loop)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
from fastapi import APIRouter

from lichen.api.serving import create_api
from lichen.control.plans import Machine
from lichen.runtime.controlling import Controller
from lichen.runtime.state import StateStore
from lichen.runtime.workspaces import Workspace
from lichen.spec.models import AppSpec
from lichen.testing import FakeLauncher, FakeProber, LoopClock, run_in_virtual_time, until

TOKEN = "t0ken"


SPEC = {"app": "t", "services": {"web": {"entrypoint": "svc:Svc", "replicas": 2}}}


@contextlib.asynccontextmanager
async def running_api(tmp_path: Path, reload_spec: Callable[[], AppSpec] | None = None) -> AsyncIterator[tuple]:
    """A running controller, and ``call(method, path, ...)``: a request to its ASGI app on the same loop."""
    launcher = FakeLauncher()
    controller = Controller(Workspace(tmp_path), StateStore(tmp_path / "state.db"), launcher=launcher,
                            prober=FakeProber(), clock=LoopClock(), machine=Machine(4, 8 * 2**30))
    spec = AppSpec.model_validate(SPEC)
    controller.apply(spec, "c")
    extra = APIRouter(prefix="/api/v1")

    @extra.get("/hello")
    async def hello() -> dict:
        return {"hello": True}

    app = create_api(controller, TOKEN, extra_routers=[extra], reload_spec=reload_spec or (lambda: spec))
    task = asyncio.create_task(controller.run())

    async def call(method: str, path: str, token: str | None = TOKEN, **kwargs) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
            return await client.request(method, path, headers=headers, **kwargs)

    await until(lambda: len(controller.endpoints.endpoints()) == 2, "two ready replicas")
    try:
        yield call, controller, launcher, tmp_path
    finally:
        controller.shutdown()
        await asyncio.wait_for(task, 60)


def test_every_v1_route_needs_the_token(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_api(tmp_path) as (call, *_):
            assert (await call("GET", "/v1/status", token=None)).status_code == 401
            assert (await call("GET", "/v1/status", token="nope")).status_code == 401
            assert (await call("GET", "/api/v1/hello", token=None)).status_code == 401  # extra routers: same check
            assert (await call("GET", "/api/v1/hello")).json() == {"hello": True}
            assert (await call("GET", "/healthz", token=None)).status_code == 200
            metrics = (await call("GET", "/metrics", token=None)).text
            assert 'lichen_replicas{revision=' in metrics and "lichen_controller_loop_seconds_count" in metrics

    run_in_virtual_time(scenario())


def test_status_scale_restart_events_endpoints_logs(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_api(tmp_path) as (call, controller, _launcher, _):
            status = (await call("GET", "/v1/status")).json()
            assert status["services"]["web"]["ready"] == 2 and len(status["replicas"]) == 2
            assert (await call("POST", "/v1/services/nope/scale", json={"replicas": 1})).status_code == 404
            assert (await call("POST", "/v1/services/web/scale", json={"replicas": -1})).status_code == 422
            scaled = (await call("POST", "/v1/services/web/scale", json={"replicas": 1})).json()
            assert scaled == {"service": "web", "replicas": 1}
            await until(lambda: len(controller.replicas) == 1, "the scale-down")
            version = (await call("GET", "/v1/endpoints")).json()["version"]
            old_revision = controller.services["web"].revision
            new_revision = (await call("POST", "/v1/services/web/restart")).json()["revision"]
            assert new_revision != old_revision
            waited_from = controller.clock.now()
            changed = (await call("GET", "/v1/endpoints", params={"version": version, "wait_s": 5})).json()
            assert changed["version"] > version and controller.clock.now() - waited_from < 5  # answered on the change
            kinds = [e["kind"] for e in (await call("GET", "/v1/events", params={"service": "web"})).json()]
            assert "Scaled" in kinds and "RestartRequested" in kinds and "Started" in kinds
            replica_id = next(iter(controller.replicas))
            (tmp_path / ".lichen" / "logs").mkdir(parents=True, exist_ok=True)
            (tmp_path / ".lichen" / "logs" / f"{replica_id}.log").write_text("one\ntwo\n")
            logs = (await call("GET", "/v1/logs/web", params={"lines": 1})).json()["replicas"][replica_id]
            assert logs["text"] == "two\n" and logs["offset"] == 8
            more = (await call("GET", "/v1/logs/web", params={"offsets": f'{{"{replica_id}": 4}}'})).json()
            assert more["replicas"][replica_id]["text"] == "two\n"
            none = (await call("GET", "/v1/logs/web", params={"lines": 0})).json()["replicas"][replica_id]  # -f -n 0
            assert none == {"text": "", "offset": 8, "live": True}
            assert (await call("GET", "/v1/logs/web", params={"lines": -1})).status_code == 422
            applied = (await call("POST", "/v1/apply")).json()
            assert applied["changed"] == ["web"]  # the real code digest differs from "c"
            assert applied["scaled"] == {"web": [1, 2]}  # lichen.yaml's count replaces the 'lichen scale' one
            again = (await call("POST", "/v1/apply")).json()
            assert again["changed"] == [] and again["scaled"] == {}  # applying the same app again changes nothing
            assert again["added"] == [] and again["removed"] == []

    run_in_virtual_time(scenario())


def test_events_are_readable_from_the_state_store_when_no_controller_runs(tmp_path: Path) -> None:
    """After 'lichen down' (or a controller killed with SIGKILL) the event log explains what happened."""
    import json

    from typer.testing import CliRunner

    from lichen.cli.main import app as cli

    (tmp_path / "lichen.yaml").write_text("app: t\nservices:\n  web: {entrypoint: 'svc:Svc'}\n")
    store = StateStore(tmp_path / ".lichen" / "state.db")
    store.add_event(time.time(), "web", "Exited", "Error", "exit code 3 after 0.4s", "web-abcde-0")
    store.add_event(time.time(), "other", "Started", "", "", "other-abcde-0")
    store.close()
    result = CliRunner().invoke(cli, ["events", "--service", "web", "--json", "-C", str(tmp_path)])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["kind"], r["message"]) for r in rows] == [("Exited", "exit code 3 after 0.4s")]
    empty = tmp_path / "fresh"
    empty.mkdir()
    (empty / "lichen.yaml").write_text("app: t\nservices: {}\n")
    result = CliRunner().invoke(cli, ["events", "-C", str(empty)])
    assert result.exit_code != 0 and "no controller runs" in str(result.exception)


def test_listing_a_rule_file_or_no_longer_listing_it_rolls_no_replica(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "app.yml").write_text("groups: []\n")  # a YAML file already in the app dir
    listed = AppSpec.model_validate({**SPEC, "observability": {"rules": ["rules/app.yml"]}})
    specs = [AppSpec.model_validate(SPEC)]

    async def scenario() -> None:
        async with running_api(tmp_path, reload_spec=lambda: specs[-1]) as (call, controller, _, _):
            assert (await call("POST", "/v1/apply")).json()["changed"] == ["web"]  # the real code digest replaces "c"
            revision = controller.services["web"].revision
            specs.append(listed)
            assert (await call("POST", "/v1/apply")).json()["changed"] == []  # now a rule file: reloaded, not rolled
            specs.append(AppSpec.model_validate(SPEC))
            assert (await call("POST", "/v1/apply")).json()["changed"] == []  # no longer listed: still no rollout
            assert controller.services["web"].revision == revision

    run_in_virtual_time(scenario())
