"""Real processes for the gateway tests: tiny uvicorn backends and `lichen gateway` subprocesses."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from waiting import free_port, wait_until

HERE = Path(__file__).resolve().parent
BACKEND = HERE / "apps" / "backend.py"
WS_BACKEND = HERE / "apps" / "ws_backend.py"
LICHEN = [str(Path(sys.executable).with_name("lichen"))]


def get_status(url: str, timeout: float = 2.0) -> int:
    try:
        return httpx.get(url, timeout=timeout).status_code
    except httpx.HTTPError:
        return 0


class Backend:
    def __init__(self, replica: str, tmp: Path, env: dict[str, str] | None = None) -> None:
        self.replica = replica
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"backend-{replica}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, str(BACKEND), "--port", str(self.port), "--replica", replica],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=HERE / "apps",
            )

    def wait(self) -> Backend:
        wait_until(lambda: get_status(f"{self.url}/healthz") == 200 or self.process.poll() is not None, f"backend {self.replica}")
        assert self.process.poll() is None, self.log.read_text()
        return self

    def endpoint(self, revision: str = "default", ready: bool = True) -> dict[str, Any]:
        return {"url": self.url, "replica": self.replica, "revision": revision, "ready": ready}

    def set_fail(self, status: int) -> None:
        httpx.get(f"{self.url}/_fail?status={status}", timeout=2.0)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)


class WsBackend:
    """``apps/ws_backend.py``: a uvicorn replica speaking WebSocket (echo, hello, refuse)."""

    def __init__(self, replica: str, tmp: Path) -> None:
        self.port = free_port()
        self.log = tmp / f"ws-{replica}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen([sys.executable, str(WS_BACKEND), "--port", str(self.port),
                                             "--replica", replica], stdout=out, stderr=subprocess.STDOUT)
        wait_until(lambda: get_status(f"http://127.0.0.1:{self.port}/healthz") == 200 or self.process.poll() is not None,
                   f"ws backend {replica}")
        assert self.process.poll() is None, self.log.read_text()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=15)


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


class GatewayProcess:
    def __init__(self, config: dict[str, Any], tmp: Path, env: dict[str, str] | None = None, wait: bool = True) -> None:
        self.config_path = tmp / f"gateway-{free_port()}.json"
        self.config = {"host": "127.0.0.1", "port": 0, "reload_interval_s": 0.2, **config}
        write_json(self.config_path, self.config)
        self.stderr_path = self.config_path.with_suffix(".log")
        self.stderr = self.stderr_path.open("wb")
        self.process = subprocess.Popen(
            [*LICHEN, "gateway", "--config", str(self.config_path)], stdout=subprocess.PIPE, stderr=self.stderr,
            env={**os.environ, **(env or {})}, cwd=tmp,
        )
        self.port = 0
        self.url = ""
        self.listening: dict[str, Any] = {}
        """the gateway's "listening" line: port, and with TLS redirect_port and internal_port"""
        self.internal_url = ""
        """a plaintext URL of this gateway (its internal listener beside TLS), for metrics"""
        if wait:
            self.wait()

    def wait(self) -> GatewayProcess:
        """Block until the gateway printed the port it listens on."""
        if not self.port:
            self.listening = json.loads(self._read_line(30.0))
            self.port = self.listening["port"]
            scheme, host = ("https", "localhost") if self.listening.get("tls") else ("http", "127.0.0.1")
            self.url = f"{scheme}://{host}:{self.port}"
            internal = self.listening.get("internal_port")
            self.internal_url = f"http://127.0.0.1:{internal}" if internal else self.url
        return self

    def _read_line(self, timeout_s: float) -> str:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout_s)
        line = self.process.stdout.readline().decode() if ready else ""
        if not line:
            self.stop()
            raise AssertionError(f"gateway did not start: {self.stderr_path.read_text()}")
        return line

    def update(self, **changes: Any) -> None:
        self.config = {**self.config, **changes, "port": self.port}
        write_json(self.config_path, self.config)

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(f"{self.internal_url}/metrics", timeout=5.0).text
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def log_text(self) -> str:
        self.stderr.flush()
        return self.stderr_path.read_text()

    def log_events(self, event: str) -> list[dict[str, Any]]:
        """The gateway's JSON log lines whose event is ``event``."""
        found = []
        for line in self.log_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("event") == event:
                found.append(record)
        return found

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.stderr.close()


class LoadGenerator:
    """Threads sending requests over keep-alive connections until stopped; records every outcome."""

    def __init__(self, url: str, threads: int = 4, method: str = "GET", headers: dict[str, str] | None = None) -> None:
        self.url = url
        self.method = method
        self.headers = headers or {}
        self.statuses: Counter[int] = Counter()
        self.replicas: Counter[str] = Counter()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(timeout=10.0) as client:
            while not self._stop.is_set():
                try:
                    response = client.request(self.method, self.url, headers=self.headers)
                    with self._lock:
                        self.statuses[response.status_code] += 1
                        self.replicas[response.headers.get("x-replica", "")] += 1
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.errors.append(f"{type(exc).__name__}: {exc}")

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.statuses.values()) + len(self.errors)

    def __enter__(self) -> LoadGenerator:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)
