"""A planted secret, stored with `lichen secrets set` and used by a real service under `lichen up`, appears in
no state file, log, event, `lichen status --json`, crash log tail or rendered chart, though the service has it,
prints it, logs it and crashes with it in its error."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from cp_harness import FAST_PROBES, HERE, LICHEN, App, wait_until

pytestmark = pytest.mark.slow
PLANTED = "Zq9-planted-secret-\u00e9-4b1f"
BACKOFF = {"initial_backoff_s": 0.2, "max_backoff_s": 2, "reset_after_s": 60}


def _files(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file()]


def _leaks(texts: dict[str, bytes]) -> list[str]:
    forms = {PLANTED.encode(), json.dumps(PLANTED)[1:-1].encode(), PLANTED.encode("unicode_escape")}
    return [where for where, data in texts.items() if any(form in data for form in forms)]


def test_a_planted_secret_reaches_the_service_and_nothing_else(make_app, tmp_path: Path) -> None:
    app: App = make_app()
    shutil.copy(HERE / "secsvc.py", app.dir / "secsvc.py")
    service = {"entrypoint": "secsvc:Shop", "secrets": ["API_TOKEN"], "termination_grace_s": 2,
               "probes": FAST_PROBES, "restart": BACKOFF}
    app.write_spec(web={**service, "env": {"CRASH_ONCE": "1"}}, crasher={**service, "env": {"CRASH_ALWAYS": "1"}})
    stored = subprocess.run([*LICHEN, "secrets", "set", "API_TOKEN", "-C", str(app.dir)], input=PLANTED, text=True,
                            capture_output=True, timeout=60, env={**os.environ, "COLUMNS": "200"})
    assert stored.returncode == 0 and PLANTED not in stored.stdout + stored.stderr
    app.up("--no-wait")

    looping = wait_until(lambda: [r for r in app.replicas("CrashLoopBackOff") if r["service"] == "crasher"],
                         "the crasher in CrashLoopBackOff")[0]
    web = wait_until(lambda: [r for r in app.replicas("Ready") if r["service"] == "web"], "web ready")[0]
    assert web["restarts"] >= 1  # it crashed once with the secret in its error
    gateway = f"http://127.0.0.1:{app.gateway_port}"
    used = wait_until(lambda: (r := httpx.get(f"{gateway}/web/uses-secret")).status_code == 200 and r, "the gateway")
    assert used.json()["sha256"] == hashlib.sha256(PLANTED.encode()).hexdigest()  # the service has it
    assert "***" in looping["log_tail"] and "always crashing, holding ***" in looping["log_tail"]

    outputs = {
        "lichen status --json": app.cli("status", "--json", "-C", str(app.dir)).stdout,
        "lichen status": app.cli("status", "-C", str(app.dir)).stdout,
        "lichen events --json": app.cli("events", "--json", "--limit", "1000", "-C", str(app.dir)).stdout,
        "lichen logs web": app.cli("logs", "web", "--all", "-n", "10000", "-C", str(app.dir)).stdout,
        "lichen logs crasher": app.cli("logs", "crasher", "--all", "-n", "10000", "-C", str(app.dir)).stdout,
        "lichen secrets list --json": app.cli("secrets", "list", "--json", "-C", str(app.dir)).stdout,
    }
    assert "starting with API_TOKEN=***" in outputs["lichen logs web"]  # its print reached the log, masked
    assert '"api_value":"***"' in outputs["lichen logs web"].replace(" ", "")
    render = {"helm": tmp_path / "chart", "kubernetes": tmp_path / "manifests"}
    for kind, out in render.items():
        app.cli("render", kind, str(app.dir), "--out", str(out))
    texts = {name: text.encode() for name, text in outputs.items()}
    texts.update({str(path): path.read_bytes() for out in render.values() for path in _files(out)})
    texts.update({str(path): path.read_bytes() for path in _files(app.dir)})  # state, logs, gateway.json, ...
    assert any("logs" in where and "web" in where for where in texts)
    assert any(where.endswith("secrets.enc") for where in texts)
    assert _leaks(texts) == []

    app.cli("down", str(app.dir))  # and nothing is left behind on disk once it stops
    assert _leaks({str(path): path.read_bytes() for path in _files(app.dir)}) == []
