"""Helpers for the control-plane integration tests: an app dir, the real CLI, waiting on conditions."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import yaml

from lichen.api.clients import ControlClient
from lichen.runtime.workspaces import Workspace
from waiting import free_port, wait_until  # noqa: F401 - the control-plane tests import it from here

HERE = Path(__file__).resolve().parent
LICHEN = [sys.executable, "-c", "from lichen.cli.main import run; run()"]
FAST_PROBES = {
    "readiness": {"period_s": 0.3, "timeout_s": 0.5, "failure_threshold": 1},
    "liveness": {"period_s": 0.5, "timeout_s": 0.3, "failure_threshold": 2},
}


class App:
    def __init__(self, root: Path) -> None:
        self.dir = root
        self.dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(HERE / "ctlsvc.py", self.dir / "ctlsvc.py")
        self.workspace = Workspace(self.dir)
        self.gateway_port = free_port()  # not 8080: 'lichen up' fails when its gateway cannot listen

    def write_spec(self, **services: dict[str, Any]) -> None:
        spec = {"app": "cptest", "gateway": {"port": self.gateway_port}, "services": {}}
        for name, overrides in services.items():
            service = {"entrypoint": "ctlsvc:Probe", "replicas": 1, "termination_grace_s": 2, "probes": FAST_PROBES}
            service.update(overrides)
            spec["services"][name] = service
        (self.dir / "lichen.yaml").write_text(yaml.safe_dump(spec))

    def cli(self, *args: str, check: bool = True, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "COLUMNS": "200"}
        result = subprocess.run([*LICHEN, *args], cwd=self.dir, capture_output=True, text=True, timeout=timeout_s,
                                env=env)
        if check and result.returncode != 0:
            raise AssertionError(f"lichen {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def up(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.cli("up", str(self.dir), "--detach", *args)

    def client(self) -> ControlClient:
        return ControlClient(self.workspace)

    def status(self) -> dict[str, Any]:
        with self.client() as client:
            return client.status()

    def events(self, service: str | None = None) -> list[dict[str, Any]]:
        with self.client() as client:
            return client.events(service, limit=1000)

    def replicas(self, state: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.status()["replicas"] if state is None or r["state"] == state]

    def controller_pid(self) -> int:
        return self.client().pid

    def marked_processes(self, replicas_only: bool = False) -> list[psutil.Process]:
        """Every live process whose environment names this app's controller (only replicas if asked)."""
        found = []
        for process in psutil.process_iter(["pid"]):
            try:
                env = process.environ()
                if replicas_only and "LICHEN_REPLICA" not in env:
                    continue
                if env.get("LICHEN_CONTROLLER") == str(self.dir) and process.status() != psutil.STATUS_ZOMBIE:
                    found.append(process)
            except (psutil.Error, OSError):
                continue
        return found
