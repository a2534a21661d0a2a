"""CLI actions that change state without the API each leave an audit record with their result."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from lichen.cli.main import app
from lichen.runtime.audit_logs import AuditLog

runner = CliRunner()


def test_keys_silences_and_tokens_are_audited_with_their_results(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lichen.yaml").write_text("app: shop\n")
    created = runner.invoke(app, ["keys", "create", "mobile", "--json"])
    assert created.exit_code == 0, created.output
    secret = json.loads(created.output)["token"]
    assert runner.invoke(app, ["keys", "revoke", "nope"]).exit_code != 0
    silenced = runner.invoke(app, ["silence", "add", "alertname=X", "-d", "1h", "-C", str(tmp_path), "--json"])
    assert silenced.exit_code == 0, silenced.output
    made = runner.invoke(app, ["tokens", "create", "ci", "--role", "operator", "-C", str(tmp_path), "--json"])
    assert made.exit_code == 0, made.output

    log = AuditLog(tmp_path / ".lichen" / "audit.log")
    records = [r for _, r in log.records()]
    assert [(r["action"], r["result"]) for r in records] == [
        ("keys.create", "ok"), ("keys.revoke", "error"), ("silence.add", "ok"), ("tokens.create", "ok")]
    assert "no API key with id 'nope'" in records[1]["detail"]
    assert records[2]["params"]["matchers"] == '["alertname=X"]'
    raw = log.path.read_text()
    assert secret not in raw and json.loads(made.output)["token"] not in raw
    verified = runner.invoke(app, ["audit", "verify", "-C", str(tmp_path), "--json"])
    assert verified.exit_code == 0 and json.loads(verified.output)["records"] == 4
