"""Shared by the `lichen up` end-to-end tests: a switchable app, traffic, a webhook receiver, the query API.

The app's one service, ``model``, answers ``GET /predict`` with 200 until a
file ``fail`` exists in the app directory, then with 500s. Each replica's very
first request fails too (a cold-start glitch), so every replica exposes its
5xx series from the start, as a service in production does after its first
error; the rules' ``rate()`` then sees a failure the first scrape after it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml
from waiting import free_port, wait_until  # noqa: F401 - the e2e tests import them from here

LICHEN = [sys.executable, "-c", "from lichen.cli.main import run; run()"]
FLAKY = '''
import os
from pathlib import Path

from lichen import Service, endpoint

FLAG = Path(os.environ.get("LICHEN_APP_DIR", ".")) / "fail"


class Flaky(Service):
    def setup(self) -> None:
        self.glitched = False

    @endpoint("/predict", method="GET", timeout_s=5)
    def predict(self) -> dict:
        if not self.glitched:
            self.glitched = True
            raise RuntimeError("cold-start glitch")
        if FLAG.exists():
            raise RuntimeError("injected failure")
        return {"ok": True}
'''
FAST_PROBES = {
    "readiness": {"period_s": 0.5, "timeout_s": 0.5, "failure_threshold": 2},
    "liveness": {"period_s": 1.0, "timeout_s": 1.0, "failure_threshold": 3},
}


class UpApp:
    """A temporary app directory run with the real `lichen up --detach` / `lichen down`."""

    def __init__(self, root: Path, observability: dict[str, Any], rules: str | None = None, replicas: int = 2) -> None:
        self.dir = root
        (root / "flaky.py").write_text(FLAKY)
        if rules is not None:
            (root / "rules.yml").write_text(rules)
            observability = {**observability, "rules": ["rules.yml"]}
        spec = {
            "app": "alerting",
            "gateway": {"port": free_port()},  # not 8080: 'lichen up' fails when its gateway cannot listen
            "services": {"model": {"entrypoint": "flaky:Flaky", "replicas": replicas, "termination_grace_s": 2,
                                   "probes": FAST_PROBES}},
            "observability": observability,
        }
        (root / "lichen.yaml").write_text(yaml.safe_dump(spec))
        self.info: dict[str, Any] = {}

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*LICHEN, *args], cwd=self.dir, capture_output=True, text=True, timeout=180,
                                env={**os.environ, "COLUMNS": "200"})
        if check and result.returncode != 0:
            raise AssertionError(f"lichen {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def up(self) -> subprocess.CompletedProcess[str]:
        result = self.cli("up", str(self.dir), "--detach")
        self.info = json.loads((self.dir / ".lichen" / "controller.json").read_text())
        return result

    def down(self) -> None:
        self.cli("down", str(self.dir), check=False)
        for process in psutil.process_iter(["pid"]):
            try:
                if process.environ().get("LICHEN_CONTROLLER") == str(self.dir):
                    process.kill()
            except (psutil.Error, OSError):
                continue

    @property
    def url(self) -> str:
        return str(self.info["url"])

    @property
    def token(self) -> str:
        return (self.dir / ".lichen" / "token").read_text().strip()

    def get(self, path: str, **params: Any) -> Any:
        response = httpx.get(self.url + path, params=params, headers={"Authorization": f"Bearer {self.token}"},
                             timeout=10)
        response.raise_for_status()
        return response.json()

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self.get("/api/v1/query", query=expr)["data"]["result"])

    def alerts(self, name: str) -> list[dict[str, Any]]:
        return [a for a in self.get("/api/v1/alerts")["data"]["alerts"] if a["labels"].get("alertname") == name]

    def ready_ports(self) -> list[int]:
        status = self.get("/v1/status")
        return [r["port"] for r in status["replicas"] if r["state"] == "Ready"]

    def fail(self, on: bool) -> None:
        flag = self.dir / "fail"
        if on:
            flag.write_text("1")
        else:
            flag.unlink(missing_ok=True)


class Load:
    """GET /predict on every replica in a loop (one thread); records when 500s start and stop."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.count = 0
        self.errors = 0
        self.first_error_after: dict[float, float] = {}
        self._watch: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def watch_errors_from(self, t: float) -> None:
        """Remember the wall time of the first 500 answered after wall time ``t``."""
        self._watch = t

    def first_error(self, t: float) -> float | None:
        return self.first_error_after.get(t)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                for port in self.ports:
                    try:
                        status = client.get(f"http://127.0.0.1:{port}/predict").status_code
                    except httpx.HTTPError:
                        status = 0
                    self.count += 1
                    if status >= 500:
                        self.errors += 1
                        watch = self._watch
                        if watch is not None and watch not in self.first_error_after:
                            self.first_error_after[watch] = time.time()
                time.sleep(0.002)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)
