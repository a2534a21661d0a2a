"""Roles on the control API: every route, called with no token, a wrong token, and a token of each role.

The table below is the contract: a route that is added, removed or changes
role fails :func:`test_every_route_is_in_the_table` until the table says so,
and a route that declares no role stops the API from being built at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter, Depends

from lichen.api.serving import access_guard, create_api
from lichen.control.access import ROLES, role_grants
from lichen.control.plans import Machine
from lichen.observe.dashboard import build_dashboard_router
from lichen.observe.http_api import build_query_router
from lichen.observe.series import SeriesStore
from lichen.runtime.access_tokens import TokenStore
from lichen.runtime.audit_logs import AuditLog
from lichen.runtime.controlling import Controller
from lichen.runtime.state import StateStore
from lichen.runtime.workspaces import Workspace
from lichen.spec.models import AppSpec
from lichen.testing import FakeLauncher, FakeProber, LoopClock, run_in_virtual_time, until

OWNER = "owner-t0ken"
SPEC = {"app": "t", "services": {"web": {"entrypoint": "svc:Svc", "replicas": 2}}}

EXPECTED = {
    ("GET", "/healthz"): "public",
    ("GET", "/metrics"): "public",
    ("GET", "/v1/status"): "viewer",
    ("POST", "/v1/apply"): "operator",
    ("POST", "/v1/services/{service}/scale"): "operator",
    ("POST", "/v1/services/{service}/activate"): "operator",
    ("GET", "/v1/services/{service}/rollout"): "viewer",
    ("POST", "/v1/services/{service}/rollout/{action}"): "operator",
    ("GET", "/v1/energy"): "viewer",
    ("GET", "/v1/advice"): "viewer",
    ("POST", "/v1/services/{service}/restart"): "operator",
    ("POST", "/v1/services/{service}/stop"): "operator",
    ("POST", "/v1/shutdown"): "admin",
    ("GET", "/v1/events"): "viewer",
    ("GET", "/v1/endpoints"): "viewer",
    ("GET", "/v1/logs/{service}"): "viewer",
    ("PUT", "/v1/services/{service}/faults"): "operator",
    ("PUT", "/v1/receivers/{receiver}/faults"): "operator",
    ("GET", "/v1/notifications"): "viewer",
    ("GET", "/v1/state"): "viewer",
    ("PUT", "/v1/state/faults"): "operator",
    ("GET", "/v1/tokens"): "admin",
    ("POST", "/v1/tokens"): "admin",
    ("DELETE", "/v1/tokens/{token_id}"): "admin",
    ("GET", "/v1/audit"): "admin",
    **{(method, path): "viewer" for path in ("/api/v1/query", "/api/v1/query_range", "/api/v1/series",
                                              "/api/v1/labels", "/api/v1/query_exemplars")
       for method in ("GET", "POST")},
    ("GET", "/api/v1/label/{name}/values"): "viewer",
    ("GET", "/api/v1/status/buildinfo"): "viewer",
    ("GET", "/api/v1/status/config"): "viewer",
    ("GET", "/api/v1/status/runtimeinfo"): "viewer",
    ("GET", "/api/v1/metadata"): "viewer",
    ("GET", "/api/v1/rules"): "viewer",
    ("GET", "/api/v1/alerts"): "viewer",
    ("GET", "/federate"): "viewer",
    ("GET", "/dashboard"): "public",
    ("GET", "/dashboard/"): "public",
    ("GET", "/dashboard/static/{name}"): "public",
    ("GET", "/dashboard/api/config"): "viewer",
    ("GET", "/dashboard/api/overview"): "viewer",
    ("GET", "/dashboard/api/slo"): "viewer",
}
PATH_VALUES = {"service": "web", "action": "pause", "token_id": "nosuchid", "name": "job", "receiver": "hook"}
BODIES = {"/v1/services/{service}/scale": {"replicas": 2}, "/v1/tokens": {"name": "ci", "role": "viewer"},
          "/v1/services/{service}/faults": {"faults": []}, "/v1/receivers/{receiver}/faults": {"faults": []},
          "/v1/state/faults": {"faults": []}}


@contextlib.asynccontextmanager
async def full_api(tmp_path: Path) -> AsyncIterator[tuple]:
    """A controller on in-memory twins with the API as ``lichen up`` builds it: the v1 routes, the query API and
    the dashboard, one token check for all."""
    controller = Controller(Workspace(tmp_path), StateStore(tmp_path / "state.db"), launcher=FakeLauncher(),
                            prober=FakeProber(), clock=LoopClock(), machine=Machine(4, 8 * 2**30))
    spec = AppSpec.model_validate(SPEC)
    controller.apply(spec, "c")
    guard = access_guard(controller, OWNER)
    routers = [build_query_router(SeriesStore()), build_dashboard_router(requires=guard.requires, token=OWNER)]
    app = create_api(controller, OWNER, routers, reload_spec=lambda: spec, guard=guard)
    task = asyncio.create_task(controller.run())
    store = TokenStore(tmp_path / ".lichen" / "tokens.db")
    tokens = {role: store.create(f"{role}-bot", role, None)[1] for role in ROLES}

    async def call(method: str, path: str, token: str | None, **kwargs) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
            return await client.request(method, path, headers=headers, **kwargs)

    await until(lambda: len(controller.endpoints.endpoints()) == 2, "two ready replicas")
    try:
        yield app, call, tokens, store
    finally:
        controller.shutdown()
        await asyncio.wait_for(task, 60)


def test_every_route_is_in_the_table(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with full_api(tmp_path) as (app, *_):
            assert app.state.route_roles == EXPECTED

    run_in_virtual_time(scenario())


def test_each_route_answers_each_role(tmp_path: Path) -> None:
    """No token and a wrong token: 401 everywhere but public routes. A role below the route's: 403. At or above:
    neither. The shutdown route goes last, with the admin token."""

    async def scenario() -> None:
        async with full_api(tmp_path) as (app, call, tokens, _):
            keys = sorted(EXPECTED, key=lambda k: k == ("POST", "/v1/shutdown"))
            for method, template in keys:
                needed = EXPECTED[(method, template)]
                path = template.format(**{**PATH_VALUES, "name": "index.html"}) if "static" in template \
                    else template.format(**PATH_VALUES)
                body = BODIES.get(template)
                for label, token in (("none", None), ("wrong", "lct_abcd1234_nottheright0ne")):
                    answer = await call(method, path, token, json=body)
                    if needed == "public":
                        assert answer.status_code in (200, 307), (label, method, path, answer.text)
                    else:
                        assert answer.status_code == 401, (label, method, path, answer.text)
                for role in ROLES:
                    answer = await call(method, path, tokens[role], json=body)
                    if role_grants(role, needed):
                        assert answer.status_code not in (401, 403), (role, method, path, answer.text)
                    else:
                        assert answer.status_code == 403, (role, method, path, answer.text)
                        assert f"has role {role}; this needs {needed}" in answer.json()["detail"]

    run_in_virtual_time(scenario())


def test_a_route_without_a_role_stops_the_api_from_being_built(tmp_path: Path) -> None:
    controller = Controller(Workspace(tmp_path), StateStore(tmp_path / "state.db"), launcher=FakeLauncher(),
                            prober=FakeProber(), clock=LoopClock(), machine=Machine(4, 8 * 2**30))
    careless = APIRouter(dependencies=[Depends(lambda: None)])  # has dependencies, but no role among them

    @careless.post("/v1/forgot")
    async def forgot() -> dict:
        return {}

    with pytest.raises(RuntimeError, match="POST /v1/forgot"):
        create_api(controller, OWNER, [careless])


def test_revoked_and_expired_tokens_are_refused_at_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with full_api(tmp_path) as (_app, call, tokens, store):
            viewer_id = tokens["viewer"].split("_")[1]
            assert (await call("GET", "/v1/status", tokens["viewer"])).status_code == 200
            store.revoke(viewer_id)
            refused = await call("GET", "/v1/status", tokens["viewer"])
            assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
            short, secret = store.create("short-lived", "operator", expires_at=0.0 + 1.0)
            answer = await call("GET", "/v1/status", secret)
            assert answer.status_code == 401 and "expired" in answer.json()["detail"]
            tampered = tokens["admin"][:-2] + ("AA" if not tokens["admin"].endswith("AA") else "BB")
            assert (await call("GET", "/v1/status", tampered)).status_code == 401

    run_in_virtual_time(scenario())


def test_admin_manages_tokens_through_the_api_and_every_change_is_audited(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with full_api(tmp_path) as (_app, call, tokens, _store):
            made = await call("POST", "/v1/tokens", tokens["admin"], json={"name": "grafana", "role": "viewer",
                                                                            "expires_in": "30d"})
            assert made.status_code == 200, made.text
            secret = made.json()["token"]
            assert (await call("GET", "/v1/status", secret)).status_code == 200
            listed = (await call("GET", "/v1/tokens", tokens["admin"])).json()
            assert {t["name"]: t["role"] for t in listed}["grafana"] == "viewer"
            assert all("token" not in t and "secret_sha256" not in t for t in listed)
            bad = await call("POST", "/v1/tokens", tokens["admin"], json={"name": "x", "role": "root"})
            assert bad.status_code == 422
            assert (await call("POST", "/v1/services/web/scale", tokens["viewer"], json={"replicas": 5})).status_code == 403
            assert (await call("POST", "/v1/services/web/scale", tokens["operator"], json={"replicas": 3})).status_code == 200
            assert (await call("DELETE", f"/v1/tokens/{made.json()['id']}", tokens["admin"])).status_code == 200
            assert (await call("GET", "/v1/status", secret)).status_code == 401

            assert (await call("POST", "/api/v1/query", tokens["viewer"], data={"query": "up"})).status_code == 200
            audit = (await call("GET", "/v1/audit", tokens["admin"])).json()
            assert audit["intact"] and audit["problems"] == []
            actions = [(r["action"], r["result"], r["actor"]) for r in audit["records"]]
            operator_id = tokens["operator"].split("_")[1]
            viewer_id = tokens["viewer"].split("_")[1]
            assert ("POST /v1/services/web/scale", "denied", viewer_id) in actions
            assert ("POST /v1/services/web/scale", "ok", operator_id) in actions
            assert ("POST /v1/tokens", "error", tokens["admin"].split("_")[1]) in actions  # the 422
            assert not any(a.startswith("POST /api/v1/") for a, _, _ in actions)  # a query by POST only reads
            scaled = next(r for r in audit["records"] if r["result"] == "ok" and r["action"].endswith("/scale"))
            assert scaled["params"] == {"replicas": 3} and scaled["status"] == 200 and scaled["role"] == "operator"
            raw = (tmp_path / ".lichen" / "audit.log").read_text()
            assert secret not in raw and all(t not in raw for t in tokens.values())  # secrets never recorded
            assert json.loads(raw.splitlines()[0])["seq"] == 0

    run_in_virtual_time(scenario())


def test_audit_log_detects_an_edited_line(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with full_api(tmp_path) as (_app, call, tokens, _):
            for replicas in (1, 2, 3):
                await call("POST", "/v1/services/web/scale", tokens["operator"], json={"replicas": replicas})
    run_in_virtual_time(scenario())
    log = AuditLog(tmp_path / ".lichen" / "audit.log")
    assert log.verify().intact and log.verify().records == 3
    lines = log.path.read_text().splitlines(keepends=True)
    assert '"replicas":2' in lines[1]
    lines[1] = lines[1].replace('"replicas":2', '"replicas":9')
    log.path.write_text("".join(lines))
    report = log.verify()
    assert not report.intact and report.problems[0][0] == 2 and "edited" in report.problems[0][1]
