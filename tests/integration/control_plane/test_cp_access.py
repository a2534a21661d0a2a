"""Roles and the audit log through the real CLI on a real controller: `lichen tokens`, LICHEN_TOKEN, the
dashboard with a viewer token, `lichen audit list|verify`, and a tampered log caught with its file and line."""

from __future__ import annotations

import json
import os
import subprocess

import httpx
import pytest
from cp_harness import LICHEN

pytestmark = pytest.mark.slow


def _as(app, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LICHEN_TOKEN": token, "COLUMNS": "200"}
    return subprocess.run([*LICHEN, *args], cwd=app.dir, capture_output=True, text=True, timeout=120, env=env)


def test_roles_reach_the_cli_and_the_dashboard_and_every_change_is_audited(make_app) -> None:
    app = make_app()
    app.write_spec(api={"replicas": 1})
    app.up()
    viewer = json.loads(app.cli("tokens", "create", "grafana", "--role", "viewer", "--json").stdout)
    operator = json.loads(app.cli("tokens", "create", "oncall", "--role", "operator", "--json").stdout)
    listed = json.loads(app.cli("tokens", "list", "--json").stdout)
    assert {t["name"]: t["role"] for t in listed} == {"grafana": "viewer", "oncall": "operator"}
    assert all("token" not in t for t in listed)

    status = _as(app, viewer["token"], "status", "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["services"]["api"]
    refused = _as(app, viewer["token"], "scale", "api", "2")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert f"token {viewer['id']} has role viewer; this needs operator" in refused.stderr
    scaled = _as(app, operator["token"], "scale", "api", "2")
    assert scaled.returncode == 0, scaled.stderr

    url = app.client().info["url"]
    overview = httpx.get(f"{url}/dashboard/api/overview", headers={"Authorization": f"Bearer {viewer['token']}"})
    assert overview.status_code == 200 and overview.json()["services"][0]["name"] == "api"
    assert httpx.get(f"{url}/dashboard/api/overview").status_code == 401
    assert httpx.get(f"{url}/dashboard/").status_code == 200  # the page itself carries no data

    app.cli("tokens", "revoke", viewer["id"])
    after = _as(app, viewer["token"], "status")
    assert after.returncode != 0 and "revoked bearer token" in after.stderr

    records = json.loads(app.cli("audit", "list", "--json", "-n", "100").stdout)
    seen = [(r["actor"], r["action"], r["result"]) for r in records]
    assert seen[0][0].startswith("local:") and seen[0][1:] == ("up", "ok")  # the controller's start
    assert seen[1][0].startswith("local:") and seen[1][1:] == ("tokens.create", "ok")
    assert (viewer["id"], "POST /v1/services/api/scale", "denied") in seen
    assert (operator["id"], "POST /v1/services/api/scale", "ok") in seen
    assert any(a == "tokens.revoke" and r == "ok" for _, a, r in seen)
    ok = next(r for r in records if r["actor"] == operator["id"])
    assert ok["params"] == {"replicas": 2} and ok["client"].startswith("lichen-cli/") and ok["role"] == "operator"
    raw = (app.dir / ".lichen" / "audit.log").read_text()
    assert viewer["token"] not in raw and operator["token"] not in raw

    verified = json.loads(app.cli("audit", "verify", "--json").stdout)
    assert verified["intact"] and verified["records"] == len(records)

    lines = raw.splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines) if '"result":"denied"' in line)
    lines[index] = lines[index].replace('"result":"denied"', '"result":"ok"')
    (app.dir / ".lichen" / "audit.log").write_text("".join(lines))
    broken = app.cli("audit", "verify", check=False)
    assert broken.returncode != 0 and "Traceback" not in broken.stderr
    assert f"audit.log:{index + 1}" in broken.stdout + broken.stderr and "edited" in broken.stdout + broken.stderr
