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

    .venv/bin/python bench/chaos.py [--data ../shared/data/ml-100k] [--rate 50]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from lichen.control.chaos_verdicts import at_full_strength

ROOT = Path(__file__).resolve().parents[1]
LICHEN = [sys.executable, "-c", "from lichen.cli.main import run; run()"]
ROUTE = "/v1/recommendations/1?k=10"

K8S_PERIOD_S, K8S_TIMEOUT_S, K8S_FAILURES, PLEG_S, PROXY_SYNC_S = 10.0, 1.0, 3, 1.0, 1.0
FAULTS = [
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
        (app / "lichen.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        print(f"running the pipeline on {args.data} ...", flush=True)
        lichen("run", "--app", str(app), "--data", args.data, "-q")
        lichen("up", str(app), "--detach")
        rows = []
        try:
            for label, fault, k8s in FAULTS:
                settle(app)
                experiment = {"name": label, "load": {"route": ROUTE, "rate": args.rate}, "duration": "30s",
                              "faults": [{**fault, "at": "5s"}], "hypotheses": []}
                path = Path(scratch) / "experiment.yaml"
                path.write_text(yaml.safe_dump(experiment))
                done = lichen("chaos", str(app), str(path), "--json", check=False, timeout_s=300)
                if not done.stdout:
                    raise SystemExit(f"lichen chaos failed for {label}:\n{done.stderr[-3000:]}")
                report = json.loads(done.stdout)
                outcome = report["faults"][0]
                rows.append((label, outcome, report, k8s))
                print(f"{label}: detected {outcome['detected_s']}, recovered {outcome['recovered_s']}, "
                      f"failed {outcome['failed']}, p99 {report['load']['latency_ms']['p99']} ms, "
                      f"retries {report['retries']}, orphans {len(report['orphans'])}", flush=True)
        finally:
            lichen("down", str(app), check=False)
    fmt = lambda v: "-" if v is None else f"{v:.2f} s"  # noqa: E731
    header = ("| fault | detected after | recovered after | failed requests | p99 (whole run) | retries | "
              "orphans | Kubernetes defaults (computed) |")
    print("\n" + header + "\n|---|---:|---:|---:|---:|---:|---:|---|")
    for label, outcome, report, k8s in rows:
        load = report["load"]
        print(f"| {label} | {fmt(outcome['detected_s'])} | {fmt(outcome['recovered_s'])} | {outcome['failed']} "
              f"of {load['scheduled']} | {load['latency_ms']['p99']:.1f} ms | {report['retries']} | "
              f"{len(report['orphans'])} | {k8s} |")


if __name__ == "__main__":
    main()
