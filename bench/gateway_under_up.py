"""How fast the gateway under `lichen up` follows the endpoint registry.

A real controller runs one service behind its supervised gateway. The bench
scales the service up one replica at a time; for each new replica it takes
the controller's ``Ready`` event time and the time the first response naming
that replica comes back through the gateway (clients poll the gateway every
few milliseconds). The difference is the propagation delay: the config check
(every ``CONFIG_CHECK_S``), the atomic write, the gateway's file check (every
``RELOAD_INTERVAL_S``), the table swap and the balancer picking the replica.
It prints each sample, the median and maximum next to the design bound
(``CONFIG_CHECK_S + RELOAD_INTERVAL_S``), and the ratio.

Example: .venv/bin/python bench/gateway_under_up.py --samples 5
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import yaml

from lichen.runtime.gatewaying import CONFIG_CHECK_S, RELOAD_INTERVAL_S

SERVICE = '''
import os
from lichen import Service, endpoint


class Who(Service):
    @endpoint("/who", method="GET")
    async def who(self) -> dict:
        return {"replica": os.environ.get("LICHEN_REPLICA")}
'''
LICHEN = [sys.executable, "-c", "from lichen.cli.main import run; run()"]
FAST = {"readiness": {"period_s": 0.2, "timeout_s": 0.5, "failure_threshold": 1}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli(app: Path, *args: str) -> str:
    result = subprocess.run([*LICHEN, *args], cwd=app, capture_output=True, text=True, timeout=600)
    if result.returncode:
        raise SystemExit(f"lichen {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


class FirstSeen:
    """Clients polling the gateway; the wall time each replica first answered."""

    def __init__(self, url: str, clients: int = 4) -> None:
        self.url = url
        self.first: dict[str, float] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(clients)]
        for thread in self.threads:
            thread.start()

    def run(self) -> None:
        with httpx.Client(timeout=5.0) as client:
            while not self.stop.is_set():
                try:
                    response = client.get(self.url)
                    replica = response.json().get("replica") if response.status_code == 200 else None
                except (httpx.HTTPError, ValueError):
                    replica = None
                now = time.time()
                if replica:
                    with self.lock:
                        self.first.setdefault(replica, now)
                time.sleep(0.002)

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=5, help="replicas added one at a time")
    args = parser.parse_args()
    app = Path(tempfile.mkdtemp(prefix="lichen-bench-gw-"))
    port = free_port()
    (app / "benchsvc.py").write_text(SERVICE)
    spec = {"app": "bench", "gateway": {"port": port},
            "services": {"who": {"entrypoint": "benchsvc:Who", "replicas": 1, "termination_grace_s": 2,
                                 "probes": FAST, "routes": [{"prefix": "/", "strip_prefix": False}]}}}
    (app / "lichen.yaml").write_text(yaml.safe_dump(spec))
    from lichen.api.clients import ControlClient
    from lichen.runtime.workspaces import Workspace

    delays: list[float] = []
    seen = None
    try:
        print(cli(app, "up", str(app), "--detach", "--timeout-s", "300").strip())
        seen = FirstSeen(f"http://127.0.0.1:{port}/who")
        with ControlClient(Workspace(app)) as client:
            for n in range(2, args.samples + 2):
                before = {r["id"] for r in client.status()["replicas"]}
                client.scale("who", n)
                deadline = time.monotonic() + 120
                while True:
                    ready = [e for e in client.events("who", limit=500) if e["kind"] == "Ready" and e["replica"] not in before]
                    new = ready[0]["replica"] if ready else None
                    if new is not None and new in seen.first:
                        break
                    if time.monotonic() > deadline:
                        raise SystemExit(f"replica {n} never answered through the gateway")
                    time.sleep(0.05)
                delay = seen.first[new] - ready[0]["at"]
                delays.append(delay)
                print(f"replica {new}: ready -> first response through the gateway {delay * 1000:7.1f} ms")
    finally:
        if seen is not None:
            seen.close()
        subprocess.run([*LICHEN, "down", str(app)], cwd=app, capture_output=True, timeout=600)
        shutil.rmtree(app, ignore_errors=True)
    bound = CONFIG_CHECK_S + RELOAD_INTERVAL_S
    median, worst = statistics.median(delays), max(delays)
    print(f"\npropagation over {len(delays)} scale-ups: median {median * 1000:.1f} ms, max {worst * 1000:.1f} ms")
    print(f"design bound (config check {CONFIG_CHECK_S:g} s + gateway reload check {RELOAD_INTERVAL_S:g} s): "
          f"{bound * 1000:.0f} ms")
    print(f"ratio median/bound {median / bound:.2f}, max/bound {worst / bound:.2f}")


if __name__ == "__main__":
    main()
