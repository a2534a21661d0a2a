"""Helpers for driving a real `lichen serve` subprocess: free ports, condition waits, metrics."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from waiting import free_port, wait_until  # noqa: F401 - the SDK tests import them from here

APPS = Path(__file__).resolve().parent / "apps"
LICHEN = [sys.executable, "-c", "from lichen.cli.main import run; run()"]
DEADLINE_S = 60.0


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
