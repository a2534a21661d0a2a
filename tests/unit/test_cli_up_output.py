"""What `lichen up` and `lichen logs` decide and print: a gateway that cannot start, the dashboard URL,
the rules report of a re-apply, and `-n` values."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lichen.api.serving import read_log_chunk
from lichen.cli.controlling import observability_lines, settle_failure
from lichen.cli.output import dashboard_line

LICHEN = str(Path(sys.executable).with_name("lichen"))
GATEWAY_LOG = ("error: /app/.lichen/gateway.json: cannot listen on 127.0.0.1:8080: address already in use\n"
               "error: /app/.lichen/gateway.json: cannot listen on 127.0.0.1:8080: address already in use\n")


def _state(gateway: dict) -> dict:
    return {"services": {"web": {"revision": "r1", "desired": 1, "ready": 1, "rollout": None, "conditions": []}},
            "replicas": [{"id": "web-r1-0", "service": "web", "revision": "r1", "state": "Ready"}],
            "gateway": gateway}


def test_a_crash_looping_gateway_stops_lichen_up_with_its_own_error_line() -> None:
    gateway = {"url": "http://127.0.0.1:8080", "state": "CrashLoopBackOff", "last_exit_code": 2,
               "log": "/app/.lichen/logs/gateway.log", "log_tail": GATEWAY_LOG}
    failure = settle_failure(_state(gateway))
    assert failure is not None
    first, *rest = failure.splitlines()
    assert "gateway for http://127.0.0.1:8080 cannot start" in first and "exit code 2" in first
    assert "/app/.lichen/logs/gateway.log" in first
    assert rest == ["  error: /app/.lichen/gateway.json: cannot listen on 127.0.0.1:8080: address already in use"]
    for state in ("Ready", "Starting", "NotReady", "Pending"):  # still coming up: keep waiting
        assert settle_failure(_state(dict(gateway, state=state))) is None
    assert settle_failure(_state(None)) is None


def test_the_dashboard_url_carries_the_token_only_to_a_terminal() -> None:
    assert dashboard_line("http://127.0.0.1:7000", "s3cret", private=True) == \
        "dashboard http://127.0.0.1:7000/dashboard/#token=s3cret"
    shared = dashboard_line("http://127.0.0.1:7000", "s3cret", private=False)
    assert "s3cret" not in shared and shared.startswith("dashboard http://127.0.0.1:7000/dashboard/ ")
    assert "lichen dashboard" in shared and ".lichen/token" in shared
    assert "#token" not in dashboard_line("http://127.0.0.1:7000", None, private=True)


def test_the_rules_report_of_a_reapply() -> None:
    report = {"rules": {"status": "applied", "changed": ["mine (rules.yml)"], "added": ["extra (rules.yml)"],
                        "removed": [], "unchanged": 2},
              "notifications": {"status": "applied", "receivers": ["oncall"]},
              "restart_needed": ["observability.retention"]}
    assert observability_lines(report) == [
        "rules: applied (changed mine (rules.yml); added extra (rules.yml)); 2 unchanged groups keep their alert state",
        "receivers, route and inhibit rules: applied (receivers: oncall)",
        "observability.retention changed: it takes effect when the controller restarts ('lichen down', then 'lichen up')",
    ]
    quiet = dict(report, rules=dict(report["rules"], status="unchanged"), notifications={"status": "unchanged"},
                 restart_needed=[])
    assert observability_lines(quiet) == ["rules: unchanged"]
    assert observability_lines(None) == []  # LICHEN_OBSERVE=off


def test_zero_lines_starts_at_the_end_of_the_log(tmp_path: Path) -> None:
    log = tmp_path / "web-0.log"
    log.write_text("old 1\nold 2\n")
    assert read_log_chunk(log, None, 0) == ("", log.stat().st_size)
    assert read_log_chunk(log, None, 1) == ("old 2\n", log.stat().st_size)
    end = log.stat().st_size
    with log.open("a") as f:
        f.write("new\n")
    assert read_log_chunk(log, end, 0) == ("new\n", log.stat().st_size)  # -f then prints what comes next


def test_bad_line_counts_are_one_line_errors(tmp_path: Path) -> None:
    for value in ("-1", "10001"):
        result = subprocess.run([LICHEN, "logs", "web", "-n", value], cwd=tmp_path, capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 2, result.stderr
        assert result.stderr == f"error: --lines: must be from 0 to 10000, got {value}\n"
    zero = subprocess.run([LICHEN, "logs", "web", "-n", "0"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert "--lines" not in zero.stderr and "no controller runs" in zero.stderr  # 0 is a valid count
