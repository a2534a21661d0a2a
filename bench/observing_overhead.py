"""What observability adds to the controller's CPU under `lichen up`, at steady state with 20 replicas.

Runs the same app twice with a real controller (`lichen up --detach`): once
with ``LICHEN_OBSERVE=off`` (no scraping, rules or notifier) and once with the
stack on (scrape every replica, the controller itself and the gateway when
there is one, default rule pack, a log receiver). After all replicas are
ready and a settle period, it samples the controller process's CPU time
(user + system, psutil) over a window and prints both sides, their
difference, and the ratio, beside the control plane's budget of 5 % of one
core. It also prints what the controller reports about the stack itself
(``lichen_observe_round_seconds`` on its /metrics: wall time per scrape round
and per evaluation round, which includes waiting on the worker thread) and
the series in its store.

Usage: python bench/observing_overhead.py [--replicas 20] [--window-s 20] [--scrape-interval-s 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import httpx
import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _control_plane_apps import BenchApp  # noqa: E402

BUDGET_PERCENT = 5.0


def _metrics(url: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("lichen_observe_") and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def run(replicas: int, window_s: float, scrape_s: float, observe: bool) -> dict[str, float]:
    os.environ["LICHEN_OBSERVE"] = "on" if observe else "off"
    app = BenchApp(replicas=replicas)
    spec = yaml.safe_load((app.dir / "lichen.yaml").read_text())
    spec["observability"] = {"scrape_interval_s": scrape_s, "evaluation_interval_s": scrape_s,
                             "scrape_timeout_s": min(2.0, scrape_s), "receivers": [{"name": "log", "log": True}]}
    (app.dir / "lichen.yaml").write_text(yaml.safe_dump(spec))
    try:
        app.up()
        with app.client() as client:
            controller = psutil.Process(client.pid)
            url = client.info["url"]
            ready = sum(r["state"] == "Ready" for r in client.status()["replicas"])
            time.sleep(max(3.0, 2 * scrape_s))  # settle: first scrapes, rule groups' first evaluations
            m0 = _metrics(url) if observe else {}
            t0, c0 = time.monotonic(), sum(controller.cpu_times()[:2])
            time.sleep(window_s)
            t1, c1 = time.monotonic(), sum(controller.cpu_times()[:2])
            m1 = _metrics(url) if observe else {}
    finally:
        app.down()
    result = {"ready": float(ready), "cpu_pct": 100.0 * (c1 - c0) / (t1 - t0)}
    if observe:
        for kind in ("scrape", "evaluate"):
            count = m1.get(f'lichen_observe_round_seconds_count{{kind="{kind}"}}', 0) - m0.get(
                f'lichen_observe_round_seconds_count{{kind="{kind}"}}', 0)
            total = m1.get(f'lichen_observe_round_seconds_sum{{kind="{kind}"}}', 0) - m0.get(
                f'lichen_observe_round_seconds_sum{{kind="{kind}"}}', 0)
            result[f"{kind}_rounds"] = count
            result[f"{kind}_ms"] = 1000 * total / count if count else float("nan")
        result["series"] = m1.get("lichen_observe_series", 0)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=20)
    parser.add_argument("--window-s", type=float, default=20.0)
    parser.add_argument("--scrape-interval-s", type=float, default=5.0)
    args = parser.parse_args()
    off = run(args.replicas, args.window_s, args.scrape_interval_s, observe=False)
    on = run(args.replicas, args.window_s, args.scrape_interval_s, observe=True)
    print(f"observability overhead: {args.replicas} replicas ({int(off['ready'])} and {int(on['ready'])} ready), "
          f"scrape and evaluation every {args.scrape_interval_s:g}s, window {args.window_s:g}s, {os.cpu_count()} CPUs")
    print(f"{'':<44}{'off':>9}{'on':>9}{'on-off':>9}{'on/off':>8}")
    print(f"{'controller CPU, % of one core':<44}{off['cpu_pct']:>8.2f}%{on['cpu_pct']:>8.2f}%"
          f"{on['cpu_pct'] - off['cpu_pct']:>8.2f}%{on['cpu_pct'] / max(off['cpu_pct'], 1e-9):>7.2f}x")
    print(f"{'scrape round (all targets), mean wall ms':<44}{'':>9}{on['scrape_ms']:>9.1f}"
          f"   ({int(on['scrape_rounds'])} rounds)")
    print(f"{'rule evaluation round, mean wall ms':<44}{'':>9}{on['evaluate_ms']:>9.1f}"
          f"   ({int(on['evaluate_rounds'])} rounds)")
    print(f"{'series in the store':<44}{'':>9}{int(on['series']):>9d}")
    verdict = "met" if on["cpu_pct"] < BUDGET_PERCENT else "MISSED"
    print(f"target: controller with observability < {BUDGET_PERCENT:g}% of one core: {verdict}")


if __name__ == "__main__":
    main()
