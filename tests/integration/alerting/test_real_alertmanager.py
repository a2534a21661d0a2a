"""Lichen's notifier feeding a real Alertmanager (Debian's prometheus-alertmanager).

Alertmanager groups the alerts Lichen pushes and calls a webhook on loopback;
the test checks the alert's round trip (firing, then resolved) and that the
payload Alertmanager sends has exactly the fields Lichen's own webhook
payload has.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from lichen.control.notifying import Alert, Notification
from lichen.observe.notifications import NotificationStore, Notifier, Receiver, webhook_payload
from lichen.observe.silences import SilenceStore
from waiting import free_port

ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(ALERTMANAGER is None, reason="apt-get install prometheus-alertmanager"),
]


class Hook:
    def __init__(self) -> None:
        self.port = free_port()
        self.bodies: list[dict] = []
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def alertmanager(tmp_path: Path):
    hook = Hook()
    port = free_port()
    config = tmp_path / "alertmanager.yml"
    config.write_text(
        "route:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 1s\n"
        "  repeat_interval: 1h\nreceivers:\n  - name: hook\n    webhook_configs:\n"
        f"      - url: http://127.0.0.1:{hook.port}/am\n        send_resolved: true\n"
    )
    proc = subprocess.Popen(
        [
            ALERTMANAGER,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "alertmanager exited"
        try:
            return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, 60, "alertmanager to be ready")
        yield url, hook
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        hook.close()


def test_alerts_pushed_to_alertmanager_reach_its_webhook_firing_then_resolved(alertmanager, tmp_path: Path) -> None:
    url, hook = alertmanager
    alert = Alert(
        labels={"alertname": "LichenReplicaDown", "service": "api", "replica": "api-2", "severity": "critical"},
        annotations={"summary": "replica api-2 of api is down"},
        starts_at=time.time() - 60,
    )
    db = tmp_path / "state.db"

    async def push(alerts: list[Alert]) -> int:
        notifier = Notifier(
            receivers=[Receiver("am", "alertmanager", url)], store=NotificationStore(db), silences=SilenceStore(db)
        )
        try:
            return (await notifier.process(alerts, time.time())).delivered
        finally:
            await notifier.aclose()

    assert asyncio.run(push([alert])) == 1
    api_alerts = httpx.get(f"{url}/api/v2/alerts", timeout=5).json()
    assert [a["labels"]["replica"] for a in api_alerts] == ["api-2"]
    assert api_alerts[0]["status"]["state"] == "active"
    wait_for(lambda: any(b["status"] == "firing" for b in hook.bodies), 30, "the firing notification")

    assert asyncio.run(push([])) == 1  # the notifier restarted: its state came from SQLite; the alert resolves
    wait_for(lambda: any(b["status"] == "resolved" for b in hook.bodies), 30, "the resolved notification")

    firing = next(b for b in hook.bodies if b["status"] == "firing")
    assert firing["version"] == "4"
    assert firing["alerts"][0]["labels"] == alert.labels
    assert firing["alerts"][0]["annotations"] == alert.annotations
    # the fingerprint Alertmanager computes equals Lichen's
    assert firing["alerts"][0]["fingerprint"] == alert.fingerprint
    # Lichen's own webhook payload has exactly the fields Alertmanager's has
    ours = webhook_payload(
        Notification("hook", "{}:{}", {"alertname": "x"}, "firing", (alert,), time.time()), "http://x"
    )
    assert set(ours) == set(firing)
    assert set(ours["alerts"][0]) == set(firing["alerts"][0])
