"""Rule files that load: `lichen up` on a running app applies an edited rule file, or refuses a broken one.

A real controller (`lichen up --detach`) evaluates a rule file. The test edits
it and runs `lichen up` again: the controller's `/api/v1/rules` shows the new
expression evaluated and a new group, the pending alert of an unchanged group
keeps its `activeAt` (its `for` timer), and no service rolls (a rule file is
not code a replica runs). Then it breaks the file: `lichen up` exits 2 with
the problem located in the rule file, the control API refuses the same apply
with 422, and the last good rules keep being evaluated.
"""

from __future__ import annotations

import time

import httpx
import pytest
import yaml
from cp_harness import wait_until

pytestmark = pytest.mark.slow
OBSERVABILITY = {"scrape_interval_s": 0.5, "scrape_timeout_s": 0.4, "evaluation_interval_s": 0.5,
                 "rules": ["rules/app.yml"]}
V1 = """\
groups:
  - name: mine
    rules:
      - record: app:replicas:up
        expr: count(up{job="replica"})
  - name: steady
    rules:
      - alert: AlwaysPending
        expr: vector(1)
        for: 1h
"""
V2 = V1.replace('count(up{job="replica"})', 'count(up{job="replica"}) * 10') + """\
  - name: extra
    rules:
      - record: app:answer
        expr: vector(42)
"""
BROKEN = V2 + """\
  - name: broken
    rules:
      - alert: Broken
        expr: 'rate(up[5m]'
"""


def _get(app, path: str, **params: str) -> dict:  # noqa: ANN001
    with app.client() as client:
        base = client.info["url"]
    response = httpx.get(base + path, params=params, timeout=10,
                         headers={"Authorization": f"Bearer {app.workspace.token_path.read_text().strip()}"})
    response.raise_for_status()
    return response.json()


def _rules(app) -> dict[str, dict]:  # noqa: ANN001
    """Each rule of the app's rule file, by name, as the controller's /api/v1/rules reports it."""
    groups = _get(app, "/api/v1/rules")["data"]["groups"]
    return {r["name"]: dict(r, group=g["name"]) for g in groups if g["file"].endswith("app.yml") for r in g["rules"]}


def _query(app, expr: str) -> list[dict]:  # noqa: ANN001
    return _get(app, "/api/v1/query", query=expr)["data"]["result"]


def test_an_edited_rule_file_is_live_after_lichen_up_and_a_broken_one_is_refused(make_app) -> None:
    app = make_app()
    app.write_spec(api={"replicas": 1})
    spec = yaml.safe_load((app.dir / "lichen.yaml").read_text())
    spec["observability"] = OBSERVABILITY
    (app.dir / "lichen.yaml").write_text(yaml.safe_dump(spec))
    (app.dir / "rules").mkdir()
    rule_file = app.dir / "rules" / "app.yml"
    rule_file.write_text(V1)
    app.up()

    first = wait_until(lambda: (r := _rules(app)) and r["app:replicas:up"]["health"] == "ok"
                       and r["AlwaysPending"]["state"] == "pending" and r, "the first rules evaluated", timeout_s=30)
    pending_since = first["AlwaysPending"]["alerts"][0]["activeAt"]
    revisions = {n: s["revision"] for n, s in app.status()["services"].items()}

    rule_file.write_text(V2)
    result = app.cli("up", str(app.dir))
    assert "rules: applied (changed mine (rules/app.yml); added extra (rules/app.yml))" in result.stdout, result.stdout
    assert "rolling update" not in result.stdout  # a rule file is not code a replica runs
    assert {n: s["revision"] for n, s in app.status()["services"].items()} == revisions

    def reloaded() -> dict | None:
        rules = _rules(app)
        fresh = rules.get("app:answer", {}).get("health") == "ok" and rules["app:replicas:up"]["health"] == "ok"
        return rules if fresh and rules["app:replicas:up"]["query"].endswith("* 10") else None

    second = wait_until(reloaded, "the edited and the added rule evaluated", timeout_s=30)
    assert wait_until(lambda: _query(app, "app:replicas:up"), "the edited recording rule's series")[0]["value"][1] == "10"
    assert _query(app, "app:answer")[0]["value"][1] == "42"
    assert second["AlwaysPending"]["alerts"][0]["activeAt"] == pending_since  # unchanged group: `for` keeps counting

    rule_file.write_text(BROKEN)
    refused = app.cli("up", str(app.dir), check=False)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    error_lines = refused.stderr.splitlines()
    assert error_lines[0] == (f"error: {rule_file}:18:9 groups[3].rules[0].expr: cannot parse PromQL "
                              "'rate(up[5m]': unclosed left parenthesis"), refused.stderr
    assert "nothing was applied" in error_lines[-1] and "Traceback" not in refused.stderr

    # the controller checks for itself (a file may break between the CLI's check and the apply)
    with app.client() as client:
        answer = httpx.post(client.info["url"] + "/v1/apply", timeout=30,
                            headers={"Authorization": f"Bearer {app.workspace.token_path.read_text().strip()}"})
    assert answer.status_code == 422
    body = answer.json()
    assert body["refused"] is True and body["problems"] == [
        f"{rule_file}:18 groups[3].rules[0].expr: cannot parse PromQL 'rate(up[5m]': unclosed left parenthesis"]

    refused_at = time.time()
    still = wait_until(lambda: (r := _rules(app)) and r["app:replicas:up"]["lastEvaluation"] > _rfc3339(refused_at)
                       and r, "the last good rules evaluated after the refusal", timeout_s=30)
    assert "Broken" not in still and still["app:replicas:up"]["query"].endswith("* 10")
    assert still["AlwaysPending"]["alerts"][0]["activeAt"] == pending_since


def _rfc3339(epoch_s: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch_s, UTC).isoformat().replace("+00:00", "Z")
