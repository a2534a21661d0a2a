"""`lichen validate` checks the rule files a spec names as `lichen rules check` does, and both report every error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from lichen.observe.rule_files import rule_file_issues
from lichen.spec.loading import check_spec

LICHEN = str(Path(sys.executable).with_name("lichen"))
BROKEN = """\
groups:
  - name: g
    rules:
      - record: ok:sum
        expr: sum(up)
      - alert: Bad
        expr: 'rate(up[5m]'
        for: 10x
  - name: h
    rules:
      - alert: Worse
        expr: up
        labels: {bad-label: x}
"""


def _lichen(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LICHEN, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def _app(tmp_path: Path, rules: str) -> Path:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "app.yml").write_text(rules)
    (tmp_path / "lichen.yaml").write_text("app: shop\nobservability:\n  rules: [rules/app.yml]\n")
    return tmp_path


def test_check_spec_locates_rule_file_problems_in_the_rule_file(tmp_path: Path) -> None:
    _app(tmp_path, BROKEN)
    spec_path = tmp_path / "lichen.yaml"
    spec, issues = check_spec(spec_path, rule_checker=rule_file_issues)
    assert spec is None
    shown = str(tmp_path / "rules" / "app.yml")
    assert [(i.file, i.line, i.column, i.field) for i in issues] == [
        (shown, 7, 9, "groups[0].rules[1].expr"),
        (shown, 8, 9, "groups[0].rules[1].for"),
        (shown, 13, 18, "groups[1].rules[0].labels.bad-label"),
    ]
    assert check_spec(spec_path)[1] == []  # without the checker (the spec layer alone) only existence is checked


def test_lichen_validate_prints_every_rule_file_problem_and_exits_2(tmp_path: Path) -> None:
    app = _app(tmp_path, BROKEN)
    result = _lichen("validate", cwd=app)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "rules/app.yml:7:9 groups[0].rules[1].expr: cannot parse PromQL 'rate(up[5m]': unclosed left parenthesis",
        "rules/app.yml:8:9 groups[0].rules[1].for: invalid duration '10x' (use Prometheus durations like 30s, 5m, 1h)",
        "rules/app.yml:13:18 groups[1].rules[0].labels.bad-label: invalid label name 'bad-label'",
    ]
    assert result.stderr.strip() == "lichen.yaml: 3 problems"
    data = json.loads(_lichen("validate", "--json", cwd=app).stdout)
    assert data["valid"] is False and [i["file"] for i in data["issues"]] == ["rules/app.yml"] * 3
    assert _lichen("validate", "--no-imports", cwd=app).returncode == 0  # --no-imports skips the app's files


def test_lichen_validate_passes_good_rule_files(tmp_path: Path) -> None:
    app = _app(tmp_path, "groups: [{name: g, rules: [{record: 'ok:sum', expr: sum(up)}]}]\n")
    result = _lichen("validate", cwd=app)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rule files check" in result.stdout


def test_lichen_rules_check_reports_every_error(tmp_path: Path) -> None:
    (tmp_path / "bad.yml").write_text(BROKEN)
    (tmp_path / "good.yml").write_text("groups: [{name: g, rules: [{record: 'ok:sum', expr: sum(up)}]}]\n")
    result = _lichen("rules", "check", "bad.yml", "good.yml", cwd=tmp_path)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert [e.split(" ")[1] for e in errors] == ["bad.yml:7", "bad.yml:8", "bad.yml:13"], result.stderr
    assert "SUCCESS: 1 rules found" in result.stdout
    report = json.loads(_lichen("rules", "check", "bad.yml", "--json", cwd=tmp_path).stdout)
    assert len(report["files"][0]["errors"]) == 3 and report["files"][0]["error"] == report["files"][0]["errors"][0]
