"""What energy accounting costs the controller under `lichen up` (issue 15: "the accounting's own cost is measured").

Runs the same app twice with a real controller (`lichen up --detach`), ``--replicas`` replicas (default 10)
behind the gateway (route ``/work``), with a steady light load of ``--rate-per-s`` (20) GET requests through
the gateway so its ``/metrics``, which the meter reads and parses every sample, has per-revision counts: once
with ``sustainability: {enabled: false}`` and once with the meter on at ``--sample-interval-s`` (default 5 s,
the default). After all replicas are ready and a settle period, it samples the controller process's CPU time
(user + system, psutil) over the same window in each run, and prints both sides, their difference, and their
ratio. It also prints what the meter counts of itself (``lichen_energy_accounting_cpu_seconds_total``: its
sampling, attribution and the parse of the gateway's metrics; not the HTTP read itself) as a share of the
controller's CPU over the window. One run of each, one after the other, on the same machine.

Usage: python bench/energy_overhead.py [--replicas 10] [--window-s 30] [--sample-interval-s 5] [--rate-per-s 20]
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _control_plane_apps import BenchApp  # noqa: E402


def _meter_cpu_s(url: str) -> float:
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("lichen_energy_accounting_cpu_seconds_total "):
            return float(line.rpartition(" ")[2])
    return 0.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _load(url: str, rate_per_s: float, stop: threading.Event, answered: list[int]) -> None:
    with httpx.Client(timeout=5) as client:
        next_at = time.monotonic()
        while not stop.is_set():
            try:
                answered.append(client.get(url).status_code)
            except httpx.HTTPError:
                answered.append(0)
            next_at += 1.0 / rate_per_s
            stop.wait(max(0.0, next_at - time.monotonic()))


def run(replicas: int, window_s: float, interval_s: float, rate_per_s: float, metered: bool) -> dict[str, float]:
    port = _free_port()
    app = BenchApp(replicas=replicas, extra={"routes": ["/work"]}, gateway_port=port)
    spec = yaml.safe_load((app.dir / "lichen.yaml").read_text())
    spec["sustainability"] = {"enabled": metered, "sample_interval_s": interval_s}
    (app.dir / "lichen.yaml").write_text(yaml.safe_dump(spec))
    stop, answered = threading.Event(), []
    load = threading.Thread(target=_load, args=(f"http://127.0.0.1:{port}/work", rate_per_s, stop, answered))
    try:
        app.up()
        load.start()
        with app.client() as client:
            controller = psutil.Process(client.pid)
            url = client.info["url"]
            ready = sum(r["state"] == "Ready" for r in client.status()["replicas"])
            time.sleep(max(3.0, 2 * interval_s))  # settle: the meter's baseline and first samples
            m0 = _meter_cpu_s(url)
            t0, c0 = time.monotonic(), sum(controller.cpu_times()[:2])
            time.sleep(window_s)
            t1, c1 = time.monotonic(), sum(controller.cpu_times()[:2])
            m1 = _meter_cpu_s(url)
    finally:
        stop.set()
        if load.is_alive():
            load.join()
        app.down()
    ok = sum(1 for status in answered if status == 200)
    return {"ready": float(ready), "cpu_s": c1 - c0, "cpu_pct": 100.0 * (c1 - c0) / (t1 - t0), "meter_s": m1 - m0,
            "answered": float(ok), "failed": float(len(answered) - ok)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicas", type=int, default=10)
    parser.add_argument("--window-s", type=float, default=30.0)
    parser.add_argument("--sample-interval-s", type=float, default=5.0)
    parser.add_argument("--rate-per-s", type=float, default=20.0)
    args = parser.parse_args()
    off = run(args.replicas, args.window_s, args.sample_interval_s, args.rate_per_s, metered=False)
    on = run(args.replicas, args.window_s, args.sample_interval_s, args.rate_per_s, metered=True)
    print(f"controller CPU over {args.window_s:g} s with {args.replicas} replicas behind the gateway at "
          f"{args.rate_per_s:g} req/s (ready: off {off['ready']:.0f}, on {on['ready']:.0f}; answered off "
          f"{off['answered']:.0f}/{off['answered'] + off['failed']:.0f}, on {on['answered']:.0f}/"
          f"{on['answered'] + on['failed']:.0f}), sample every {args.sample_interval_s:g} s")
    print(f"  accounting off: {off['cpu_pct']:.2f} % of a core ({off['cpu_s']:.3f} CPU s)")
    print(f"  accounting on:  {on['cpu_pct']:.2f} % of a core ({on['cpu_s']:.3f} CPU s)")
    ratio = on["cpu_s"] / off["cpu_s"] if off["cpu_s"] else float("nan")
    print(f"  difference: {on['cpu_pct'] - off['cpu_pct']:+.2f} points of a core; ratio on/off {ratio:.2f}x")
    share = on["meter_s"] / on["cpu_s"] if on["cpu_s"] else float("nan")
    print(f"  the meter's own count: {on['meter_s']:.4f} CPU s = {share:.1%} of the controller's CPU "
          f"({1000 * on['meter_s'] / max(1.0, args.window_s / args.sample_interval_s):.2f} ms per sample)")


if __name__ == "__main__":
    main()
