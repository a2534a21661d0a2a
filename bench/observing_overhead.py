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

A last line times the default rule pack's evaluation with a store already
holding the full 6 h retention of the same replicas (in process), since its
long burn-rate windows cost more than the live run's young store shows.

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


def evaluation_at_full_retention(replicas: int, interval_s: float, rounds: int = 3) -> dict[str, float]:
    """CPU of one default-rule-pack round over a store already holding 6 h of ``replicas`` replicas' series.

    The live runs above see a young store; the pack's long windows (burn rates
    over 6h and 3d) cost more once the retention window is full, so this
    fills one (the SDK's series per replica, scraped every ``interval_s``) and
    times the same evaluation the controller runs, in process.
    """
    from lichen.observe.promql import Engine
    from lichen.observe.rules import RuleManager
    from lichen.observe.series import SeriesStore
    from lichen.runtime.observing import default_groups
    from lichen.spec.models import AppSpec

    spec = AppSpec.model_validate({"app": "bench", "services": {"work": {"entrypoint": "benchsvc:Work"}}})
    store = SeriesStore()
    rules = RuleManager(store, Engine(store), default_interval_s=interval_s)
    rules.add_groups(default_groups(spec))
    now = time.time()
    buckets = ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "+Inf")
    retention_s = 6 * 3600.0  # the spec's default retention (SeriesStore's default too)
    for i in range(int(retention_s / interval_s) + 1):
        ms = int((now - retention_s + interval_s * i) * 1000)
        items = []
        for r in range(replicas):
            base = {"service": "work", "revision": "r1", "replica": f"work-{r}", "instance": f"127.0.0.1:{9000 + r}",
                    "job": "replica"}
            ep = {**base, "endpoint": "work", "method": "GET"}
            items.append(({"__name__": "up", **base}, ms, 1.0))
            items.append(({"__name__": "lichen_requests_total", **ep, "status": "200"}, ms, 10.0 * i))
            items.append(({"__name__": "lichen_requests_total", **ep, "status": "500"}, ms, 0.01 * i))
            items.extend(({"__name__": "lichen_request_duration_seconds_bucket", **ep, "le": le}, ms, 10.0 * i)
                         for le in buckets)
            items.append(({"__name__": "lichen_request_duration_seconds_count", **ep}, ms, 10.0 * i))
            items.append(({"__name__": "lichen_inflight_requests", **base, "endpoint": "work"}, ms, 1.0))
            items.append(({"__name__": "lichen_max_concurrency", **base, "endpoint": "work"}, ms, 64.0))
        store.append_many(items)
    cpu = []
    for k in range(rounds):
        c0 = time.process_time()
        for group in rules.groups:
            rules.evaluate_group(group, now + interval_s * k)
        cpu.append(time.process_time() - c0)
    best = min(cpu)
    return {"cpu_ms": 1000 * best, "pct": 100 * best / interval_s, "samples": store.stats()["samples"]}


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
    full = evaluation_at_full_retention(args.replicas, args.scrape_interval_s)
    print(f"with a full 6 h store ({int(full['samples'])} samples): default rule pack round {full['cpu_ms']:.1f} ms CPU "
          f"= {full['pct']:.2f}% of one core at one round per {args.scrape_interval_s:g}s "
          f"(the live run's controller, young store: {on['cpu_pct']:.2f}% in all)")


if __name__ == "__main__":
    main()
