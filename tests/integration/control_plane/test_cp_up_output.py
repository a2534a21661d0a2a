"""What the real CLI says and exits with: a gateway port that is taken, the printed dashboard URL, `logs -f -n 0`."""

from __future__ import annotations

import http.server
import json
import os
import pty
import re
import subprocess
import threading

import httpx
import pytest
from cp_harness import LICHEN, wait_until

pytestmark = pytest.mark.slow


def test_lichen_up_fails_at_once_naming_the_process_on_the_gateways_port(make_app) -> None:
    app = make_app()
    app.write_spec(api={"replicas": 1})
    # something else already answers HTTP on the gateway's port: nothing starts, no crash loop, one line
    squatter = http.server.ThreadingHTTPServer(("127.0.0.1", app.gateway_port), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=squatter.serve_forever, daemon=True).start()
    try:
        result = app.cli("up", str(app.dir), "--detach", "--timeout-s", "60", check=False)
    finally:
        squatter.shutdown()
        squatter.server_close()
    assert result.returncode == 1, result.stdout + result.stderr
    assert "CrashLoopBackOff" not in result.stderr and "Traceback" not in result.stderr
    assert f"gateway.port: port {app.gateway_port} on 127.0.0.1 is taken by pid {os.getpid()} (" in result.stderr, \
        result.stderr
    assert "ready:" not in result.stdout and not app.workspace.controller_file.exists()


def _run_on_a_terminal(args: list[str], cwd: str) -> tuple[int, str]:
    """Run the CLI with stdout on a pseudo-terminal, as a person at a shell runs it."""
    leader, follower = pty.openpty()
    child = subprocess.Popen(args, cwd=cwd, stdin=subprocess.DEVNULL, stdout=follower, stderr=subprocess.PIPE,
                             env={**os.environ, "COLUMNS": "80"})
    os.close(follower)
    out = b""
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        out += data
    os.close(leader)
    child.wait(timeout=120)
    return child.returncode, out.decode(errors="replace")


def test_the_printed_dashboard_url_opens_signed_in_and_no_log_holds_the_token(make_app) -> None:
    app = make_app()
    app.write_spec(api={"replicas": 1})
    code, out = _run_on_a_terminal([*LICHEN, "up", str(app.dir), "--detach"], str(app.dir))
    assert code == 0, out
    token = app.workspace.token_path.read_text().strip()
    [url] = re.findall(r"^dashboard (\S+)\s*$", out, re.MULTILINE)  # one line: not wrapped at 80 columns
    page, _, fragment = url.partition("#")
    assert fragment == f"token={token}"
    assert httpx.get(page, timeout=10).status_code == 200
    config = httpx.get(page + "api/config", headers={"Authorization": f"Bearer {fragment[len('token='):]}"},
                       timeout=10)
    assert config.status_code == 200 and config.json()["app"] == "cptest"

    log = (app.dir / ".lichen" / "logs" / "controller.log").read_text()
    assert token not in log  # the daemon's log is readable by others: no token
    events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    [dashboard] = [e for e in events if e["event"] == "dashboard_url"]
    assert dashboard["url"] == page and dashboard["ts"].endswith("Z") and dashboard["logger"] == "lichen.controller"
    assert any(e["event"] == "started" and e["service"] == "api" for e in events)  # the controller's own events


def test_logs_follow_with_zero_lines_prints_only_new_lines(make_app) -> None:
    app = make_app()
    app.write_spec(api={"replicas": 1})
    app.up()
    [replica] = app.replicas("Ready")
    follower = subprocess.Popen([*LICHEN, "logs", "api", "-f", "-n", "0"], cwd=app.dir, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(follower.stdout.readline, "")), daemon=True).start()
    try:
        def marker_seen() -> bool:
            if follower.poll() is not None:
                raise AssertionError(f"lichen logs exited {follower.returncode}: {follower.stderr.read()}")
            httpx.get(f"http://127.0.0.1:{replica['port']}/whoami", headers={"X-Request-ID": "after-follow"},
                      timeout=5)
            return any("after-follow" in line for line in lines)

        wait_until(marker_seen, "a request logged after 'lichen logs -f -n 0' started", timeout_s=30, every_s=0.3)
    finally:
        follower.terminate()
        follower.wait(timeout=10)
    assert all(line.startswith(f"{replica['id']} | ") for line in lines)
    assert not [line for line in lines if "Started server process" in line or "setup finished" in line]
