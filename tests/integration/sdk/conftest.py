"""Fixtures that run a real `lichen serve` subprocess on a free port."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

APPS = Path(__file__).resolve().parent / "apps"
LICHEN = [sys.executable, "-c", "from lichen.cli.main import run; run()"]
DEADLINE_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], Any], what: str, timeout_s: float = DEADLINE_S) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


@dataclass
class Replica:
    process: subprocess.Popen[bytes]
    port: int
    gates: Path
    log_path: Path
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.url(""), timeout=DEADLINE_S)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def open_gate(self, name: str) -> None:
        (self.gates / name).touch()

    def logs(self) -> list[dict[str, Any]]:
        lines = self.log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def metric(self, name: str, **labels: str) -> float | None:
        """The value of one sample from /metrics (None when absent)."""
        text = self.client.get("/metrics").text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return sample.value
        return None

    def answers(self, path: str = "/healthz") -> int | None:
        try:
            return httpx.get(self.url(path), timeout=5).status_code
        except httpx.TransportError:
            return None

    def wait_exit(self, timeout_s: float = DEADLINE_S) -> int:
        return self.process.wait(timeout=timeout_s)


@pytest.fixture(scope="module")
def serve_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Replica]]:
    started: list[Replica] = []

    def start(target: str, *args: str, env: dict[str, str] | None = None, wait_healthy: bool = True) -> Replica:
        workdir = tmp_path_factory.mktemp("replica")
        gates = workdir / "gates"
        gates.mkdir()
        port = free_port()
        log_path = workdir / "replica.log"
        full_env = {**os.environ, "LICHEN_TEST_GATES": str(gates), **(env or {})}
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [*LICHEN, "serve", target, "--port", str(port), "--app-dir", str(APPS), *args],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=full_env,
            )
        replica = Replica(process, port, gates, log_path)
        started.append(replica)
        if wait_healthy:
            wait_until(
                lambda: replica.answers("/healthz") == 200 or process.poll() is not None, f"{target} /healthz"
            )
            assert process.poll() is None, log_path.read_text()
        return replica

    yield start
    for replica in started:
        replica.client.close()
        if replica.process.poll() is None:
            replica.process.send_signal(signal.SIGKILL)
            replica.process.wait(timeout=10)
