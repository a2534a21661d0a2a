"""The control API over a controller with in-memory process and probe twins."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter

from lichen.api.serving import create_api
from lichen.control.plans import Machine
from lichen.runtime.controlling import Controller
from lichen.runtime.state import StateStore
from lichen.runtime.workspaces import Workspace
from lichen.spec.models import AppSpec
from lichen.testing import FakeLauncher, FakeProber

TOKEN = "t0ken"


SPEC = {"app": "t", "services": {"web": {
    "entrypoint": "svc:Svc", "replicas": 2, "probes": {"readiness": {"period_s": 0.05}, "liveness": {"period_s": 0.05}}}}}


@contextlib.contextmanager
def running_api(tmp_path: Path, reload_spec: Callable[[], AppSpec] | None = None):
    """A controller looping in a background event loop, and an httpx client on its ASGI app."""
    launcher = FakeLauncher()
    controller = Controller(Workspace(tmp_path), StateStore(tmp_path / "state.db"), launcher=launcher,
                            prober=FakeProber(), tick_s=0.02, machine=Machine(4, 8 * 2**30))
    spec = AppSpec.model_validate(SPEC)
    controller.apply(spec, "c")
    extra = APIRouter(prefix="/api/v1")

    @extra.get("/hello")
    async def hello() -> dict:
        return {"hello": True}

    app = create_api(controller, TOKEN, extra_routers=[extra], reload_spec=reload_spec or (lambda: spec))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    task = asyncio.run_coroutine_threadsafe(controller.run(), loop)

    def call(method: str, path: str, token: str | None = TOKEN, **kwargs) -> httpx.Response:
        async def go() -> httpx.Response:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
                return await client.request(method, path, headers=headers, **kwargs)

        return asyncio.run_coroutine_threadsafe(go(), loop).result(10)

    deadline = time.monotonic() + 10
    while len(controller.endpoints.endpoints()) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    try:
        yield call, controller, launcher, tmp_path
    finally:
        loop.call_soon_threadsafe(controller.shutdown)
        task.result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


@pytest.fixture
def api(tmp_path: Path):
    with running_api(tmp_path) as running:
        yield running


def test_every_v1_route_needs_the_token(api) -> None:
    call, *_ = api
    assert call("GET", "/v1/status", token=None).status_code == 401
    assert call("GET", "/v1/status", token="nope").status_code == 401
    assert call("GET", "/api/v1/hello", token=None).status_code == 401  # extra routers get the same check
    assert call("GET", "/api/v1/hello").json() == {"hello": True}
    assert call("GET", "/healthz", token=None).status_code == 200
    metrics = call("GET", "/metrics", token=None).text
    assert 'lichen_replicas{revision=' in metrics and "lichen_controller_loop_seconds_count" in metrics


def test_status_scale_restart_events_endpoints_logs(api) -> None:
    call, controller, launcher, tmp_path = api
    status = call("GET", "/v1/status").json()
    assert status["services"]["web"]["ready"] == 2 and len(status["replicas"]) == 2
    assert call("POST", "/v1/services/nope/scale", json={"replicas": 1}).status_code == 404
    assert call("POST", "/v1/services/web/scale", json={"replicas": -1}).status_code == 422
    assert call("POST", "/v1/services/web/scale", json={"replicas": 1}).json() == {"service": "web", "replicas": 1}
    deadline = time.monotonic() + 10
    while len(controller.replicas) != 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    version = call("GET", "/v1/endpoints").json()["version"]
    old_revision = controller.services["web"].revision
    new_revision = call("POST", "/v1/services/web/restart").json()["revision"]
    assert new_revision != old_revision
    changed = call("GET", "/v1/endpoints", params={"version": version, "wait_s": 5}).json()
    assert changed["version"] > version
    kinds = [e["kind"] for e in call("GET", "/v1/events", params={"service": "web"}).json()]
    assert "Scaled" in kinds and "RestartRequested" in kinds and "Started" in kinds
    replica_id = next(iter(controller.replicas))
    (tmp_path / ".lichen" / "logs").mkdir(parents=True, exist_ok=True)
    (tmp_path / ".lichen" / "logs" / f"{replica_id}.log").write_text("one\ntwo\n")
    logs = call("GET", "/v1/logs/web", params={"lines": 1}).json()["replicas"][replica_id]
    assert logs["text"] == "two\n" and logs["offset"] == 8
    more = call("GET", "/v1/logs/web", params={"offsets": f'{{"{replica_id}": 4}}'}).json()
    assert more["replicas"][replica_id]["text"] == "two\n"
    none = call("GET", "/v1/logs/web", params={"lines": 0}).json()["replicas"][replica_id]  # lichen logs -f -n 0
    assert none == {"text": "", "offset": 8, "live": True}
    bad = call("GET", "/v1/logs/web", params={"lines": -1})
    assert bad.status_code == 422
    applied = call("POST", "/v1/apply").json()
    assert applied["changed"] == ["web"]  # the real code digest differs from "c"
    assert applied["scaled"] == {"web": [1, 2]}  # lichen.yaml's count replaces the 'lichen scale' one, and says so
    again = call("POST", "/v1/apply").json()
    assert again["changed"] == [] and again["scaled"] == {}  # applying the same app again changes nothing
    assert again["added"] == [] and again["removed"] == []


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
    with running_api(tmp_path, reload_spec=lambda: specs[-1]) as (call, controller, _, _):
        assert call("POST", "/v1/apply").json()["changed"] == ["web"]  # the real code digest replaces "c"
        revision = controller.services["web"].revision
        specs.append(listed)
        assert call("POST", "/v1/apply").json()["changed"] == []  # now a rule file: reloaded, not rolled out
        specs.append(AppSpec.model_validate(SPEC))
        assert call("POST", "/v1/apply").json()["changed"] == []  # no longer listed: still no rollout
        assert controller.services["web"].revision == revision
