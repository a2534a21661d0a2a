"""`lichen models list|promote|rollback|verify` over a real registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lichen import ModelRegistry
from lichen.cli.main import app, run


def _registry(tmp_path: Path) -> ModelRegistry:
    registry = ModelRegistry(tmp_path / "app" / ".lichen" / "models")
    for tag in ("a", "b"):
        src = tmp_path / tag
        src.mkdir()
        (src / "weights.bin").write_text(tag)
        registry.register("recommender", src, params={"tag": tag}, metrics={"ndcg@10": 0.3 if tag == "a" else 0.4})
    return registry


def test_list_promote_rollback_json(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    runner = CliRunner()
    app_dir = str(tmp_path / "app")
    result = runner.invoke(app, ["models", "promote", "recommender", "v1", "--app", app_dir])
    assert result.exit_code == 0 and "promoted recommender v1" in result.output
    result = runner.invoke(app, ["models", "promote", "recommender", "2", "--registry", str(registry.root), "--json"])
    assert json.loads(result.output)["version"] == 2
    listed = json.loads(runner.invoke(app, ["models", "list", "--app", app_dir, "--json"]).output)
    assert [(m["version"], m["promoted"], m["params"]["tag"]) for m in listed] == [(1, False, "a"), (2, True, "b")]
    table = runner.invoke(app, ["models", "list", "--app", app_dir], env={"COLUMNS": "200"})
    assert "ndcg@10=0.4000" in table.output and "v2 ●" in table.output and "tag=b" in table.output
    result = runner.invoke(app, ["models", "rollback", "recommender", "--app", app_dir])
    assert result.exit_code == 0 and "rolled back recommender to v1" in result.output
    assert registry.promoted("recommender").version == 1
    assert "checksum ok" in runner.invoke(app, ["models", "verify", "recommender", "1", "--app", app_dir]).output


def test_errors_are_one_line_with_exit_codes(tmp_path: Path, capsys) -> None:
    registry = _registry(tmp_path)
    registry.promote("recommender", 1)
    cases = [
        (["models", "rollback", "recommender"], 1, "no earlier promoted version"),
        (["models", "promote", "recommender", "9"], 2, "no version 9 (known versions: 1, 2)"),
        (["models", "promote", "recommender", "latest"], 2, "expected a number such as 3 or v3"),
    ]
    for args, code, message in cases:
        with pytest.raises(SystemExit) as exc:
            run([*args, "--registry", str(registry.root)])
        assert exc.value.code == code, args
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    (registry.get("recommender", 2).path / "weights.bin").write_text("tampered")
    with pytest.raises(SystemExit) as exc:
        run(["models", "verify", "recommender", "2", "--registry", str(registry.root)])
    assert exc.value.code == 2
    assert "does not match its checksum" in capsys.readouterr().err
