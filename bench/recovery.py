"""Recovery time for a killed and for a hung replica under load, beside Kubernetes' defaults.

Runs a real controller (`lichen up --detach`) with 2 x rounds + 1 replicas of a small
service using Lichen's *default* probe settings, keeps a steady request load
on the ready replicas, then (a) sends SIGKILL to one replica and (b) blocks
another's event loop so liveness stops answering. For each it measures the
time to detect (the controller's Exited / Killed event) and the time until
the replacement is ready (its Ready event), from the moment of the fault.

Kubernetes defaults for the same events: a crashed container is restarted
at once the first time (so it is ready after its own startup time); a hung
container is detected by liveness after periodSeconds x failureThreshold +
timeoutSeconds = 10 x 3 + 1 = 31 s.

Then requests lost by planned stops: an open-loop POST load (50 req/s, each a
new non-idempotent POST, never retried) through the gateway while the service
goes through `lichen restart` five times (`--restarts`), with 1 and with 2 replicas. Both
sides run in this process, one after the other: Lichen's drain (SIGTERM only
once the gateway confirmed a table without the replica, then a 1 s window
that still accepts), and the behaviour before it (`LICHEN_DRAIN_CONFIRM=off`,
`LICHEN_DRAIN_S=0`): SIGTERM at once, no window, and the gateway finds its new
table by polling the file (every 0.25 s) — what Kubernetes does for a pod
without a preStop hook while its endpoint removal propagates.

Usage: python bench/recovery.py [--rounds 3] [--restarts 5]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _control_plane_apps import BenchApp, cold_start_s, wait_until  # noqa: E402

from lichen.testing.loads import OpenLoopLoad  # noqa: E402

from lichen.control.probing import worst_case_detection_s  # noqa: E402
from lichen.spec.models import ProbeSpec, ProbesSpec  # noqa: E402

K8S_LIVENESS = ProbeSpec(path="/healthz", period_s=10, timeout_s=1, failure_threshold=3)


class Load(threading.Thread):
    """A steady stream of requests across the ready replicas (what a gateway would send)."""

    def __init__(self, app: BenchApp) -> None:
        super().__init__(daemon=True)
        self.app, self.stop, self.ok, self.failed = app, threading.Event(), 0, 0

    def run(self) -> None:
        with self.app.client() as control, httpx.Client(timeout=1.0) as http:
            endpoints, refreshed = [], 0.0
            i = 0
            while not self.stop.is_set():
                if time.monotonic() - refreshed > 0.2:
                    endpoints = control.endpoints()["services"].get("work", [])
                    refreshed = time.monotonic()
                if not endpoints:
                    time.sleep(0.01)
                    continue
                i += 1
                try:
                    http.get(endpoints[i % len(endpoints)]["url"] + "/work")
                    self.ok += 1
                except httpx.HTTPError:
                    self.failed += 1
                time.sleep(0.005)


def event_after(app: BenchApp, kind: str, replica: str, after: float) -> dict | None:
    with app.client() as client:
        for event in client.events("work", limit=500):
            if event["kind"] == kind and event["replica"] == replica and event["at"] >= after:
                return event
    return None


def fault(app: BenchApp, kind: str) -> tuple[float, float, float]:
    """(detected, replacement started, replacement ready), seconds after the fault."""
    with app.client() as client:
        replicas = [r for r in client.status()["replicas"] if r["state"] == "Ready" and r["restarts"] == 0]
    victim = replicas[0]  # a replica that never crashed: its first restart is immediate, as in Kubernetes
    hang = None
    if kind == "kill":
        at = time.time()
        os.kill(victim["pid"], signal.SIGKILL)
        detect_kind = "Exited"
    else:
        # connect first, then start the clock as the request leaves: the replica blocks on it at once
        # (an httpx.post from a fresh thread first spends tens of ms building its client, which would
        # count as detection time)
        hang = socket.create_connection(("127.0.0.1", victim["port"]))
        at = time.time()
        hang.sendall(b"POST /hang HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n")
        detect_kind = "Killed"
    detected = wait_until(lambda: event_after(app, detect_kind, victim["id"], at), f"{kind} detection")
    if hang is not None:
        hang.close()  # the replica was killed while this request hung
    ready = wait_until(lambda: event_after(app, "Ready", victim["id"], detected["at"]), f"{kind} replacement")
    restarted = event_after(app, "Restarted", victim["id"], detected["at"]) or ready
    return detected["at"] - at, restarted["at"] - at, ready["at"] - at


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def restarts_under_load(replicas: int, confirm: bool, restarts: int, rate_per_s: float = 50.0) -> OpenLoopLoad:
    """Open-loop POSTs through ``restarts`` rolling restarts; the load's outcomes say what was lost."""
    port = free_port()
    service = {"routes": ["/order"], "env": {} if confirm else {"LICHEN_DRAIN_S": "0"}}
    app = BenchApp(replicas=replicas, extra=service, gateway_port=port,
                   env={} if confirm else {"LICHEN_DRAIN_CONFIRM": "off"})
    try:
        app.up()
        with app.client() as client, OpenLoopLoad(f"http://127.0.0.1:{port}/order", rate_per_s, body={"text": "x"}) as load:
            wait_until(lambda: load.answered >= rate_per_s / 2, "traffic through the gateway")
            for _ in range(restarts):
                before = client.status()["services"]["work"]["revision"]
                client.restart("work")

                def settled(c=client, b=before) -> bool:
                    state = c.status()
                    work = state["services"]["work"]
                    return work["revision"] != b and len(state["replicas"]) == replicas and all(
                        r["state"] == "Ready" and r["revision"] == work["revision"] for r in state["replicas"])

                wait_until(settled, "the rolling restart")
            wait_until(lambda: load.answered >= load.sent - rate_per_s, "answers to what was sent")
        return load
    finally:
        app.down()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--restarts", type=int, default=5)
    args = parser.parse_args()
    losses = {(n, confirm): restarts_under_load(n, confirm, args.restarts) for n in (1, 2) for confirm in (True, False)}
    replicas = 2 * args.rounds + 1  # every fault hits a replica that never failed before
    app = BenchApp(replicas=replicas)
    defaults = ProbesSpec().liveness
    try:
        startup = statistics.median(cold_start_s(app.dir) for _ in range(3))
        app.up()
        load = Load(app)
        load.start()
        time.sleep(1.0)
        results: dict[str, list[tuple[float, float, float]]] = {"kill": [], "hang": []}
        for _ in range(args.rounds):
            for kind in results:
                results[kind].append(fault(app, kind))
                with app.client() as client:
                    wait_until(lambda c=client: sum(r["state"] == "Ready" for r in c.status()["replicas"]) == replicas,
                               "all ready again")
        load.stop.set()
        load.join(5)
    finally:
        app.down()

    kill_detect = statistics.median(d for d, _, _ in results["kill"])
    kill_restart = statistics.median(s for _, s, _ in results["kill"])
    kill_ready = statistics.median(r for _, _, r in results["kill"])
    kill_boot = statistics.median(r - s for _, s, r in results["kill"])
    hang_detect = statistics.median(d for d, _, _ in results["hang"])
    hang_ready = statistics.median(r for _, _, r in results["hang"])
    k8s_hang = worst_case_detection_s(K8S_LIVENESS)
    print(f"recovery under load ({args.rounds} rounds, medians; {load.ok} requests served, {load.failed} failed)")
    print(f"Lichen default liveness: period {defaults.period_s:g}s x {defaults.failure_threshold} + timeout "
          f"{defaults.timeout_s:g}s (worst case {worst_case_detection_s(defaults):.1f}s)")
    print(f"replica cold start (exec -> /readyz 200), measured alone: {startup:.2f}s; "
          f"restarted replica (launch -> Ready event) under the controller: {kill_boot:.2f}s")
    print("hung: time to detect per round: " + ", ".join(f"{d:.2f}s" for d, _, _ in results["hang"]))
    print()
    print(f"{'event':<34}{'Lichen':>10}{'Kubernetes default':>22}{'ratio':>9}")
    print(f"{'killed: time to detect':<34}{kill_detect:>9.2f}s{'(restart immediate)':>22}{'':>9}")
    print(f"{'killed: time to restart':<34}{kill_restart:>9.2f}s{0.0:>21.2f}s{'':>9}")
    print(f"{'killed: time to ready replacement':<34}{kill_ready:>9.2f}s{startup:>21.2f}s{kill_ready / startup:>8.2f}x")
    print(f"{'hung: time to detect':<34}{hang_detect:>9.2f}s{k8s_hang:>21.2f}s{hang_detect / k8s_hang:>8.3f}x")
    print(f"{'hung: time to ready replacement':<34}{hang_ready:>9.2f}s{k8s_hang + startup:>21.2f}s"
          f"{hang_ready / (k8s_hang + startup):>8.3f}x")
    print()
    print(f"target: hung detected < 3 s with defaults: {'met' if hang_detect < 3 else 'MISSED'} ({hang_detect:.2f}s)")
    print(f"target: killed ready within its own startup + 0.5 s = {kill_boot + 0.5:.2f}s: "
          f"{'met' if kill_ready <= kill_boot + 0.5 else 'MISSED'} ({kill_ready:.2f}s)")
    print(f"target (vs the cold start measured alone) {startup + 0.5:.2f}s: "
          f"{'met' if kill_ready <= startup + 0.5 else 'MISSED'} ({kill_ready:.2f}s)")
    print()
    print(f"POSTs lost in {args.restarts} rolling restarts under an open-loop load of 50 req/s (same run, same app)")
    print(f"{'replicas':<10}{'Lichen (confirmed drain)':>28}{'SIGTERM at once, table polled':>32}{'ratio':>9}")
    for n in (1, 2):
        ours, theirs = losses[(n, True)], losses[(n, False)]
        lost_ours, lost_theirs = len(ours.failures), len(theirs.failures)
        ratio = f"{lost_ours / lost_theirs:.2f}x" if lost_theirs else "-"
        print(f"{n:<10}{f'{lost_ours} of {ours.sent}':>28}{f'{lost_theirs} of {theirs.sent}':>32}{ratio:>9}")
        kinds = ", ".join(f"{k}: {v}" for k, v in sorted(theirs.outcomes.items()) if k != "200")
        if kinds:
            print(f"{'':<10}{'':>28}{f'({kinds})':>32}")
    lost = sum(len(losses[(n, True)].failures) for n in (1, 2))
    print(f"target: no POST lost by a planned stop: {'met' if lost == 0 else 'MISSED'} ({lost} lost)")


if __name__ == "__main__":
    main()
