"""promtool's unit-test format on Lichen: series notation, failing verdicts, the CLI verbs."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lichen.errors import DataError
from lichen.observe.promtool_tests import expand_series_values, run_test_file
from lichen.observe.series import is_stale

LICHEN = str(Path(sys.executable).parent / "lichen")


def test_expanding_notation() -> None:
    assert expand_series_values("1+2x3") == [1, 3, 5, 7]
    assert expand_series_values("5x2 -1-1x1") == [5, 5, 5, -1, -2]
    assert expand_series_values("_ _x2 3") == [None, None, None, 3]
    values = expand_series_values("1 stale Inf -Inf 1e3")
    assert is_stale(values[1]) and values[2] == math.inf and values[3] == -math.inf and values[4] == 1000


WRONG = """
rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'up{job="a"}'
        values: '0x5'
    alert_rule_test:
      - eval_time: 5m
        alertname: Down
        exp_alerts:
          - exp_labels: {job: a, severity: wrong}
    promql_expr_test:
      - expr: up
        eval_time: 5m
        exp_samples:
          - labels: 'up{job="a"}'
            value: 1
"""
RULES = "groups: [{name: g, rules: [{alert: Down, expr: 'up == 0', for: 1m, labels: {severity: page}}]}]\n"


def test_wrong_expectations_fail_with_both_tools(tmp_path: Path) -> None:
    (tmp_path / "rules.yml").write_text(RULES)
    (tmp_path / "wrong.yml").write_text(WRONG)
    result = run_test_file(tmp_path / "wrong.yml")
    assert not result.ok
    text = result.report()
    assert "alertname: Down" in text and "severity" in text and 'expr: "up"' in text
    proc = subprocess.run([LICHEN, "rules", "test", str(tmp_path / "wrong.yml")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "FAILED" in proc.stdout
    if shutil.which("promtool"):
        assert subprocess.run(["promtool", "test", "rules", "wrong.yml"], cwd=tmp_path, capture_output=True, timeout=60).returncode == 1


def test_rules_check_cli(tmp_path: Path) -> None:
    good = tmp_path / "good.yml"
    good.write_text(RULES)
    proc = subprocess.run([LICHEN, "rules", "check", str(good), "--json"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and '"rules": 1' in proc.stdout
    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n  - name: g\n    rules:\n      - alert: X\n        expr: histogram_count(up)\n")
    proc = subprocess.run([LICHEN, "rules", "check", str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "bad.yml:5 groups[0].rules[0].expr" in proc.stderr and "histogram_count()" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("verb", ["check", "test"])
def test_help_has_an_example(verb: str) -> None:
    proc = subprocess.run([LICHEN, "rules", verb, "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "Example: lichen rules" in proc.stdout


NAN_VALUE = """
rule_files: []
tests:
  - interval: 1m
    input_series:
      - series: 'x'
        values: '1x3'
    promql_expr_test:
      - expr: x
        eval_time: 1m
        exp_samples:
          - labels: 'x'
            value: NaN
"""


def test_an_unquoted_nan_value_is_rejected_as_promtool_does(tmp_path: Path) -> None:
    """Go's YAML reads `NaN` as a string, so promtool refuses the file; `.nan` and `1e3` are floats."""
    (tmp_path / "nan.yml").write_text(NAN_VALUE)
    with pytest.raises(DataError, match="NaN"):
        run_test_file(tmp_path / "nan.yml")
    if shutil.which("promtool"):
        proc = subprocess.run(["promtool", "test", "rules", "nan.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1 and "unmarshal" in proc.stdout + proc.stderr
    (tmp_path / "sci.yml").write_text(NAN_VALUE.replace("'1x3'", "'1000x3'").replace("value: NaN", "value: 1e3"))
    assert run_test_file(tmp_path / "sci.yml").ok


def test_rules_check_checks_every_file_and_fails_if_any_is_invalid(tmp_path: Path) -> None:
    (tmp_path / "bad.yml").write_text("groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    for: 5x\n")
    (tmp_path / "good.yml").write_text(RULES)
    proc = subprocess.run([LICHEN, "rules", "check", str(tmp_path / "bad.yml"), str(tmp_path / "good.yml")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "bad.yml:6 groups[0].rules[0].for: invalid duration '5x'" in proc.stderr and "Traceback" not in proc.stderr
    assert "good.yml\n  SUCCESS: 1 rules found" in proc.stdout


def test_rules_test_reports_a_file_that_cannot_load_and_runs_the_rest(tmp_path: Path) -> None:
    (tmp_path / "rules.yml").write_text(RULES)
    (tmp_path / "broken.yml").write_text("rule_files: [missing.yml]\ntests: []\n")
    (tmp_path / "ok.yml").write_text("rule_files: [rules.yml]\ntests: []\n")
    proc = subprocess.run([LICHEN, "rules", "test", str(tmp_path / "broken.yml"), str(tmp_path / "ok.yml")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "missing.yml" in proc.stdout and proc.stdout.count("SUCCESS") == 1


FLAPPING_RULES = """
groups:
- name: fast
  interval: 30s
  rules:
  - record: job:x:sum
    expr: sum by (job) (x)
  - alert: HighSum
    expr: job:x:sum > 10
    for: 90s
    labels:
      level: '{{ if gt $value 20.0 }}hi{{ else }}lo{{ end }}'
  - alert: KeepFlap
    expr: flap > 0
    for: 1m
    keep_firing_for: 90s
- name: slow
  interval: 2m
  rules:
  - alert: StaleInput
    expr: absent_over_time(hb[2m])
"""


def _flapping_test_file() -> str:
    lines = [
        "rule_files: [rules.yml]",
        "evaluation_interval: 30s",
        "tests:",
        "- interval: 30s",
        "  input_series:",
        "  - {series: 'x{job=\"a\",i=\"1\"}', values: '1 2 4 6 8 10 12 14 14 14 1 1 1 1 20 25 25 25 25 stale 5 5 5 5'}",
        "  - {series: 'x{job=\"a\",i=\"2\"}', values: '1 2 3 4 5 6 7 8 9 10 1 1 1 1 1 1 1 1 1 1 1 1 1 1'}",
        "  - {series: flap, values: '1 1 1 0 1 1 1 1 0 0 0 1 0 0 0 0 0 0 0 0 1 1 1 1'}",
        "  - {series: hb, values: '1 1 1 1 _ _ _ _ _ _ _ 1 1 _ _ _ _ _ _ _ _'}",
        "  alert_rule_test:",
    ]
    for t in range(0, 12 * 60 + 1, 30):  # deliberately wrong expectations: both tools print what they computed
        for name in ("HighSum", "KeepFlap", "StaleInput"):
            lines.append(f"  - {{eval_time: {t}s, alertname: {name}, exp_alerts: [{{exp_labels: {{never: x}}}}]}}")
    lines.append("  promql_expr_test:")
    for t in range(0, 12 * 60 + 1, 60):
        for expr in ("ALERTS", "ALERTS_FOR_STATE", "job:x:sum"):
            lines.append(f"  - {{expr: '{expr}', eval_time: {t}s, exp_samples: [{{labels: '{{never=\"x\"}}', value: 1}}]}}")
    return "\n".join(lines) + "\n"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed (CI installs Debian's prometheus package)")
def test_failure_report_is_promtools_word_for_word(tmp_path: Path) -> None:
    """for/keep_firing_for flapping, group intervals, ALERTS_FOR_STATE, recording rules: same states, same layout."""
    (tmp_path / "rules.yml").write_text(FLAPPING_RULES)
    (tmp_path / "t.yml").write_text(_flapping_test_file())
    theirs = subprocess.run(["promtool", "test", "rules", "t.yml"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    ours = subprocess.run([LICHEN, "rules", "test", "t.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert theirs.returncode == ours.returncode == 1

    def lines(text: str) -> list[str]:
        return [line.rstrip() for line in text.splitlines() if line.strip() and not line.startswith("Unit Testing")]

    assert lines(ours.stdout) == lines(theirs.stdout)


@pytest.mark.parametrize(
    ("rule", "error"),
    [("record: r\n    expr: x", "rule: r, time: 0s, err: exceeded limit of 1 with 2 series"),
     ("alert: A\n    expr: x > 0", "rule: A, time: 0s, err: exceeded limit of 1 with 2 alerts")],
)
def test_a_group_limit_fails_the_rule_as_in_prometheus(tmp_path: Path, rule: str, error: str) -> None:
    (tmp_path / "rules.yml").write_text(f"groups:\n- name: g\n  limit: 1\n  rules:\n  - {rule}\n")
    (tmp_path / "t.yml").write_text(
        "rule_files: [rules.yml]\ntests:\n- interval: 1m\n  input_series:\n"
        "  - {series: 'x{a=\"1\"}', values: '1x3'}\n  - {series: 'x{a=\"2\"}', values: '1x3'}\n"
        "  promql_expr_test:\n  - {expr: x, eval_time: 1m, exp_samples: [{labels: 'x{a=\"1\"}', value: 1}, {labels: 'x{a=\"2\"}', value: 1}]}\n"
    )
    result = run_test_file(tmp_path / "t.yml")
    assert not result.ok and error in result.report()
    if shutil.which("promtool"):
        proc = subprocess.run(["promtool", "test", "rules", "t.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1 and error in proc.stdout + proc.stderr


def test_rules_check_warns_about_duplicate_rules_as_promtools_lint_does(tmp_path: Path) -> None:
    path = tmp_path / "dup.yml"
    path.write_text(
        "groups:\n- name: g\n  rules:\n  - record: a:b\n    expr: up\n  - record: a:b\n    expr: up\n"
        "  - record: a:b\n    expr: up\n    labels: {x: y}\n"
    )
    proc = subprocess.run([LICHEN, "rules", "check", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "SUCCESS: 3 rules found" in proc.stdout
    assert "1 duplicate rule(s)" in proc.stderr and "a:b" in proc.stderr
