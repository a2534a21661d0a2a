"""The fault table in docs/reliability.md: each fault on the reference app under a steady open-loop load.

A copy of examples/recsys (its pipeline run on MovieLens 100K first, when
the copy has no model yet) is started with `lichen up` on a free gateway
port. Then, for each fault, `lichen chaos --json` runs one experiment: a
steady load on `/v1/recommendations/...` (below the app's per-IP rate limit),
the fault a few seconds in, and enough time after it to recover. Between
experiments the app is left to settle until every replica is ready again and
the crash-loop back-off has reset. Each row prints what `lichen chaos`
measured beside what the same fault costs under Kubernetes' defaults,
computed from those defaults (not measured here): the kubelet's 1 s pod
lifecycle relist, probes at `periodSeconds: 10`, `timeoutSeconds: 1`,
`failureThreshold: 3`, and a Deployment's rolling update at
`maxUnavailable: 25%` with no preStop hook.

For the receiver-down row the copy also gets a webhook receiver (`oncall`,
a small HTTP server in this script) and a rule that fires under the bench's
own load (`BenchLoad`, with the app's default route: group_wait 30 s,
group_interval 5 m, so the notifier retries with back-off up to 60 s). It
runs first, before any other load has made the rule fire; the receiver is
held down for 60 s from 5 s in, the run lasts 90 s, and
`lichen chaos` then waits for the outbox to drain and counts what was lost
(target 0). The row also gives how long after the fault lifted the receiver
got its last notification.

    .venv/bin/python bench/chaos.py [--data ../shared/data/ml-100k] [--rate 50]
"""

from __future__ import annotations

import argparse
import http.server
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from lichen.control.chaos_verdicts import at_full_strength

ROOT = Path(__file__).resolve().parents[1]
LICHEN = [sys.executable, "-c", "from lichen.cli.main import run; run()"]
ROUTE = "/v1/recommendations/1?k=10"

K8S_PERIOD_S, K8S_TIMEOUT_S, K8S_FAILURES, PLEG_S, PROXY_SYNC_S = 10.0, 1.0, 3, 1.0, 1.0
FAULTS = [
    # first: before any other row's load, so its rule fires (and notifies) during this run, not earlier
    ("receiver down for 60 s", {"kind": "receiver_down", "receiver": "oncall", "for_s": "60s"},
     "Alertmanager retries a failed webhook with back-off until the group's next flush (group_interval, 5 m by "
     "default), which sends it again: none lost, delivered up to ~5 min late"),
    ("replica kill -9", {"kind": "kill_replica", "service": "recommender"},
     f"detected in ~{PLEG_S:g} s (kubelet relist); requests sent to the dead pod fail until kube-proxy drops it "
     f"(~{PLEG_S + PROXY_SYNC_S:g} s): about {PLEG_S + PROXY_SYNC_S:g} s x rate / replicas"),
    ("replica hang (SIGSTOP 10 s)", {"kind": "pause_replica", "service": "recommender", "for_s": "10s"},
     f"detected after up to {K8S_PERIOD_S * K8S_FAILURES + K8S_TIMEOUT_S:g} s (readiness: period "
     f"{K8S_PERIOD_S:g} s x {K8S_FAILURES} failures + {K8S_TIMEOUT_S:g} s timeout); the hung pod's share of "
     "requests hangs until then"),
    ("gateway kill -9", {"kind": "kill_gateway"},
     "an ingress pod restarts in seconds (container start); with one ingress replica every request fails "
     "meanwhile"),
    ("controller kill -9", {"kind": "kill_controller"},
     "kube-controller-manager down: the data plane carries on; 0 failed"),
    ("rolling update", {"kind": "rolling_restart", "service": "recommender"},
     "maxUnavailable 25 %; without a preStop sleep a pod gets SIGTERM while still in the endpoints for "
     f"~{PROXY_SYNC_S:g} s, so its in-flight and newly routed requests fail"),
]
RECEIVER_DOWN_S = 60.0
BENCH_RULES = """groups:
- name: bench
  rules:
  - alert: BenchLoad
    expr: sum(rate(lichen_requests_total{service="recommender"}[30s])) > 5
    for: 10s
"""


class Hook:
    """The bench's webhook receiver: records when each notification arrived."""

    def __init__(self) -> None:
        arrivals: list[tuple[float, str]] = []
        self.arrivals = arrivals

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                arrivals.append((time.time(), str(body.get("status"))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def lichen(*args: str, check: bool = True, timeout_s: float = 900) -> subprocess.CompletedProcess:
    done = subprocess.run([*LICHEN, *args], capture_output=True, text=True, timeout=timeout_s)
    if check and done.returncode != 0:
        raise SystemExit(f"lichen {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return done


def settle(app: Path, timeout_s: float = 120.0) -> None:
    """Until every wanted replica is ready, no rollout runs, and no replica waits in a crash-loop back-off."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = json.loads(lichen("status", "-C", str(app), "--json").stdout)
        waiting = any(r.get("restart_in_s") for r in status["replicas"])
        if at_full_strength(status) and not waiting and status.get("gateway"):
            return
        time.sleep(0.5)
    raise SystemExit(f"the app did not settle within {timeout_s:g} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "ml-100k"))
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second (the app allows 200 per IP)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lichen-chaos-") as scratch:
        app = Path(scratch) / "recsys"
        shutil.copytree(ROOT / "examples" / "recsys", app, ignore=shutil.ignore_patterns(".lichen", "__pycache__"))
        spec = yaml.safe_load((app / "lichen.yaml").read_text())
        spec["gateway"]["port"] = free_port()
        hook = Hook()
        (app / "bench.rules.yml").write_text(BENCH_RULES)
        observability = spec.setdefault("observability", {})
        observability["receivers"] = [*observability.get("receivers", []), {"name": "oncall", "webhook": hook.url}]
        observability["rules"] = [*observability.get("rules", []), "bench.rules.yml"]
        (app / "lichen.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        print(f"running the pipeline on {args.data} ...", flush=True)
        lichen("run", "--app", str(app), "--data", args.data, "-q")
        lichen("up", str(app), "--detach")
        rows = []
        try:
            for label, fault, k8s in FAULTS:
                settle(app)
                receiver = fault["kind"] == "receiver_down"
                experiment = {"name": label, "load": {"route": ROUTE, "rate": args.rate},
                              "duration": "90s" if receiver else "30s", "faults": [{**fault, "at": "5s"}],
                              "hypotheses": ["no notification lost"] if receiver else []}
                path = Path(scratch) / "experiment.yaml"
                path.write_text(yaml.safe_dump(experiment))
                done = lichen("chaos", str(app), str(path), "--json", check=False, timeout_s=300)
                if not done.stdout:
                    raise SystemExit(f"lichen chaos failed for {label}:\n{done.stderr[-3000:]}")
                report = json.loads(done.stdout)
                outcome = report["faults"][0]
                if receiver:
                    lifted = report["started_wall"] + 5.0 + RECEIVER_DOWN_S
                    late = [t - lifted for t, _ in hook.arrivals if t >= report["started_wall"]]
                    report["notifications"]["last_after_lift_s"] = max(late) if late else None
                    print(f"{label}: notifications {report['notifications']}", flush=True)
                    if not report["notifications"].get("created"):
                        print(f"{label}: WARNING no notification was created during the run, so none could be "
                              "lost: this row proves nothing", flush=True)
                rows.append((label, outcome, report, k8s))
                print(f"{label}: detected {outcome['detected_s']}, recovered {outcome['recovered_s']}, "
                      f"failed {outcome['failed']}, p99 {report['load']['latency_ms']['p99']} ms, "
                      f"retries {report['retries']}, orphans {len(report['orphans'])}", flush=True)
        finally:
            lichen("down", str(app), check=False)
    fmt = lambda v: "-" if v is None else f"{v:.2f} s"  # noqa: E731
    header = ("| fault | detected after | recovered after | failed requests | p99 (whole run) | retries | "
              "orphans | notifications lost | Kubernetes defaults (computed) |")
    print("\n" + header + "\n|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for label, outcome, report, k8s in rows:
        load = report["load"]
        notes = report.get("notifications")
        lost = "-" if notes is None else (
            f"{notes['lost']} of {notes['created']} (last delivered {fmt(notes.get('last_after_lift_s'))} after the "
            f"fault lifted)" if "lost" in notes else notes.get("error", "?"))
        print(f"| {label} | {fmt(outcome['detected_s'])} | {fmt(outcome['recovered_s'])} | {outcome['failed']} "
              f"of {load['scheduled']} | {load['latency_ms']['p99']:.1f} ms | {report['retries']} | "
              f"{len(report['orphans'])} | {lost} | {k8s} |")


if __name__ == "__main__":
    main()
