"""Fixtures that run a real `lichen serve` subprocess on a free port."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Iterator

import pytest
from sdk_replicas import APPS, LICHEN, Replica, free_port, wait_until


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
