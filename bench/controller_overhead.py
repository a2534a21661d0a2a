"""Controller CPU at steady state with 20 replicas, against the 5 %-of-one-core budget.

Starts a real controller (`lichen up --detach`) with 20 replicas of a small
service and Lichen's default probes (readiness and liveness every second:
40 probes/s), waits until all are ready, then samples the controller
process's CPU time (user + system, psutil) over a window. It prints the
controller's share of one core beside the budget, the probe rate, and the
cost per probe, and, for scale, the CPU the 20 replicas themselves spent
answering those probes in the same window.

Usage: python bench/controller_overhead.py [--replicas 20] [--window-s 20]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _control_plane_apps import BenchApp  # noqa: E402

BUDGET_PERCENT = 5.0


def cpu_s(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=20)
    parser.add_argument("--window-s", type=float, default=20.0)
    args = parser.parse_args()
    app = BenchApp(replicas=args.replicas)
    try:
        started = time.monotonic()
        app.up()
        startup_s = time.monotonic() - started
        with app.client() as client:
            controller = psutil.Process(client.pid)
            status = client.status()
            replicas = [psutil.Process(r["pid"]) for r in status["replicas"]]
            ready = sum(r["state"] == "Ready" for r in status["replicas"])
            time.sleep(3.0)  # settle after the start-up burst
            passes_before = _loop_count(client)
            c0, r0, t0 = cpu_s([controller]), cpu_s(replicas), time.monotonic()
            time.sleep(args.window_s)
            c1, r1, t1 = cpu_s([controller]), cpu_s(replicas), time.monotonic()
            passes_after = _loop_count(client)
    finally:
        app.down()
    wall = t1 - t0
    controller_pct = 100.0 * (c1 - c0) / wall
    replicas_pct = 100.0 * (r1 - r0) / wall
    probes_per_s = 2 * ready  # readiness + liveness, period 1 s each
    print(f"controller overhead: {ready}/{args.replicas} replicas ready after {startup_s:.1f}s; "
          f"window {wall:.1f}s at steady state")
    print(f"{'':<38}{'measured':>12}{'budget':>10}{'ratio':>9}")
    print(f"{'controller CPU, % of one core':<38}{controller_pct:>11.2f}%{BUDGET_PERCENT:>9.1f}%"
          f"{controller_pct / BUDGET_PERCENT:>8.2f}x")
    print(f"{'probes per second (readiness+liveness)':<38}{probes_per_s:>12d}")
    print(f"{'controller CPU per probe':<38}{1e6 * (c1 - c0) / max(1, probes_per_s * wall):>10.0f}us")
    passes = passes_after[0] - passes_before[0]
    print(f"{'controller passes per second':<38}{passes / wall:>12.1f}")
    print(f"{'mean pass (observe+reconcile+apply)':<38}{1e3 * (passes_after[1] - passes_before[1]) / max(1, passes):>10.2f}ms")
    print(f"{'20 replicas answering probes, % core':<38}{replicas_pct:>11.2f}%")
    print(f"target: controller < {BUDGET_PERCENT:g}% of one core: {'met' if controller_pct < BUDGET_PERCENT else 'MISSED'}")


def _loop_count(client) -> tuple[float, float]:  # noqa: ANN001
    """(passes, seconds spent in passes) from the controller's own histogram."""
    import httpx

    text = httpx.get(client.info["url"] + "/metrics").text
    count = total = 0.0
    for line in text.splitlines():
        if line.startswith("lichen_controller_loop_seconds_count"):
            count = float(line.split()[-1])
        elif line.startswith("lichen_controller_loop_seconds_sum"):
            total = float(line.split()[-1])
    return count, total


if __name__ == "__main__":
    main()
