"""Shared by bench/recovery.py and bench/controller_overhead.py: a throwaway app under a real controller."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

SERVICE = '''
import asyncio, os, time
from pydantic import BaseModel
from lichen import Service, endpoint


class Order(BaseModel):
    text: str


class Work(Service):
    @endpoint("/work", method="GET")
    async def work(self) -> dict:
        return {"replica": os.environ.get("LICHEN_REPLICA")}

    @endpoint("/order", method="POST")
    async def order(self, order: Order) -> dict:
        await asyncio.sleep(0.005)  # a little work: requests overlap a replica's stop
        return {"replica": os.environ.get("LICHEN_REPLICA"), "text": order.text}

    @endpoint("/hang", method="POST")
    async def hang(self) -> dict:
        time.sleep(3600)  # blocks the event loop: liveness stops answering
        return {}
'''
LICHEN = [sys.executable, "-c", "from lichen.cli.main import run; run()"]


class BenchApp:
    def __init__(self, replicas: int, extra: dict[str, Any] | None = None, gateway_port: int | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="lichen-bench-"))
        (self.dir / "benchsvc.py").write_text(SERVICE)
        service = {"entrypoint": "benchsvc:Work", "replicas": replicas, "termination_grace_s": 2, **(extra or {})}
        spec: dict[str, Any] = {"app": "bench", "services": {"work": service}}
        if gateway_port is not None:
            spec["gateway"] = {"port": gateway_port}
        (self.dir / "lichen.yaml").write_text(yaml.safe_dump(spec))
        self.env = {**os.environ, **(env or {})}
        """the environment of the CLI, so of the controller it starts"""

    def cli(self, *args: str) -> str:
        result = subprocess.run([*LICHEN, *args], cwd=self.dir, capture_output=True, text=True, timeout=600,
                                env=self.env)
        if result.returncode:
            raise SystemExit(f"lichen {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
        return result.stdout

    def up(self) -> None:
        self.cli("up", str(self.dir), "--detach", "--timeout-s", "300")

    def client(self):  # noqa: ANN201
        from lichen.api.clients import ControlClient
        from lichen.runtime.workspaces import Workspace

        return ControlClient(Workspace(self.dir))

    def down(self) -> None:
        try:
            self.cli("down", str(self.dir))
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def wait_until(condition, what: str, timeout_s: float = 120.0, every_s: float = 0.01):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(every_s)


def cold_start_s(app_dir: Path) -> float:
    """How long one `lichen serve` replica takes from exec to its first 200 on /readyz."""
    import socket

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.time()
    process = subprocess.Popen([*LICHEN, "serve", "benchsvc:Work", "--port", str(port), "--app-dir", str(app_dir)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    try:
        def ready() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=0.5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, "a cold replica", every_s=0.005)
        return time.time() - started
    finally:
        process.terminate()
        process.wait(10)
