"""Benchmark the metrics engine: scraping, rule evaluation, memory per sample, and query latency vs Prometheus.

Run: ``.venv/bin/python bench/observe.py`` (``--quick`` for a smaller run; ``--targets``,
``--series``, ``--hours`` ... to scale). It prints, in one run:

1. scrape cost at 50 targets x 200 series: real HTTP targets (one helper process serving 50
   loopback ports), wall and CPU time per round and per sample;
2. rule evaluation cost over that data (recording rules, histogram_quantile, alerts);
3. memory per sample: the store's buffer bytes and the whole process' RSS growth per sample;
4. latency of ``histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m])))`` over 6 h of data,
   as an instant query and a 6 h range query (step 60 s), on Lichen's engine in-process and
   through its HTTP API; where ``promtool`` and ``prometheus`` are installed, the same data is
   backfilled (``promtool tsdb create-blocks-from openmetrics``) into a real Prometheus started on
   a free port, the same queries run over HTTP, and the ratio is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
import numpy as np
import psutil

from lichen.observe.promql import Engine
from lichen.observe.rules import RuleManager
from lichen.observe.scraping import Scraper, ScrapeTarget
from lichen.observe.series import SeriesStore

QUERY = "histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m])))"
BUCKETS = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf"]

TARGET_SERVER = textwrap.dedent(
    '''
    import asyncio, random, sys
    n_targets, n_series = int(sys.argv[1]), int(sys.argv[2])
    LE = ["0.005","0.01","0.025","0.05","0.1","0.25","0.5","1","2.5","5","10","30","60","+Inf"]
    def body(k, tick):
        lines = []
        eps = [f"/e{i}" for i in range(5)]
        for e in eps:
            for st in ("200", "404", "500", "503"):
                lines.append(f'lichen_requests_total{{endpoint="{e}",method="GET",status="{st}"}} {tick * (7 if st == "200" else 1)}')
            acc = 0
            for j, le in enumerate(LE):
                acc += tick * (j + 1)
                lines.append(f'lichen_request_duration_seconds_bucket{{endpoint="{e}",method="GET",le="{le}"}} {acc}')
            lines.append(f'lichen_request_duration_seconds_sum{{endpoint="{e}",method="GET"}} {tick * 0.3}')
            lines.append(f'lichen_request_duration_seconds_count{{endpoint="{e}",method="GET"}} {acc}')
            lines.append(f'lichen_inflight_requests{{endpoint="{e}"}} {random.randint(0, 8)}')
        i = 0
        while len(lines) < n_series:
            lines.append(f'app_metric{{i="{i}"}} {random.random()}')
            i += 1
        return ("# TYPE lichen_requests_total counter\\n" + "\\n".join(lines[:n_series]) + "\\n").encode()
    ticks = {}
    async def handle(reader, writer, k):
        try:
            while True:
                await reader.readuntil(b"\\r\\n\\r\\n")
                ticks[k] = ticks.get(k, 0) + 1
                b = body(k, ticks[k])
                writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Type: text/plain\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(b) + b)
                await writer.drain()
        except Exception:
            pass
        writer.close()
    async def main():
        ports = []
        for k in range(n_targets):
            srv = await asyncio.start_server(lambda r, w, k=k: handle(r, w, k), "127.0.0.1", 0)
            ports.append(srv.sockets[0].getsockname()[1])
        print(" ".join(map(str, ports)), flush=True)
        await asyncio.Event().wait()
    asyncio.run(main())
    '''
)

BENCH_RULES = """
groups:
  - name: bench
    interval: 5s
    rules:
      - record: service:requests:rate1m
        expr: sum by (service) (rate(lichen_requests_total[1m]))
      - record: service:errors:ratio1m
        expr: sum by (service) (rate(lichen_requests_total{status=~"5.."}[1m])) / sum by (service) (rate(lichen_requests_total[1m]))
      - record: service:latency:p99_5m
        expr: histogram_quantile(0.99, sum by (service, le) (rate(lichen_request_duration_seconds_bucket[5m])))
      - record: replica:inflight:max1m
        expr: max by (service, replica) (max_over_time(lichen_inflight_requests[1m]))
      - alert: ReplicaDown
        expr: up == 0
        for: 30s
      - alert: HighErrorRatio
        expr: service:errors:ratio1m > 0.05
        for: 1m
        annotations:
          summary: "{{ $labels.service }} errors at {{ $value | humanizePercentage }}"
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fmt(x: float) -> str:
    return f"{x * 1000:.2f} ms"


# --------------------------------------------------------------------------- scraping


def bench_scrape(n_targets: int, n_series: int, rounds: int) -> SeriesStore:
    proc = subprocess.Popen([sys.executable, "-c", TARGET_SERVER, str(n_targets), str(n_series)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ports = [int(p) for p in proc.stdout.readline().split()]
        store = SeriesStore()
        targets = [
            ScrapeTarget(f"http://127.0.0.1:{p}/metrics", service=f"svc{k % 10}", revision="r1", replica=f"svc{k % 10}-{k}")
            for k, p in enumerate(ports)
        ]

        async def run() -> list[tuple[float, float, int]]:
            scraper = Scraper(store, timeout_s=10.0)
            out = []
            t0 = time.time() - rounds * 5
            await scraper.scrape_all(targets, t0 - 5)  # warm connections
            for r in range(rounds):
                wall, cpu = time.perf_counter(), time.process_time()
                results = await scraper.scrape_all(targets, t0 + r * 5)
                out.append((time.perf_counter() - wall, time.process_time() - cpu, sum(x.samples for x in results)))
                assert all(x.up for x in results), [x.error for x in results if not x.up]
            await scraper.aclose()
            return out

        stats = asyncio.run(run())
    finally:
        proc.kill()
        proc.wait()
    samples = stats[0][2]
    wall = statistics.median(s[0] for s in stats)
    cpu = statistics.median(s[1] for s in stats)
    print(f"scrape: {n_targets} targets x {n_series} series = {samples} samples/round over real loopback HTTP")
    print(f"  per round: wall {_fmt(wall)}, scraper CPU {_fmt(cpu)}; per sample: {cpu / samples * 1e6:.2f} us CPU")
    print(f"  at a 5 s interval the scraper uses {cpu / 5 * 100:.1f}% of one core")
    return store


def bench_evaluation(store: SeriesStore, n_targets: int, n_series: int) -> None:
    # widen the scraped history to 6 minutes so rate()/[5m] windows are full
    rng = np.random.default_rng(1)
    now = time.time()
    labels_seen = store.series_labels([])
    for key in labels_seen:
        for step in range(72, 0, -1):
            store.append(key, int((now - 400 - step * 5) * 1000), float(rng.integers(0, 1000)))
    engine = Engine(store)
    manager = RuleManager(store, engine)
    manager.load_text(BENCH_RULES, "bench.yml")
    timings = []
    for k in range(8):
        t = time.perf_counter()
        manager.evaluate_group(manager.groups[0], now - 400 + k * 5)
        timings.append(time.perf_counter() - t)
    errors = [r.last_error for r in manager.groups[0].rules if r.last_error]
    assert not errors, errors
    print(f"rule evaluation: 4 recording + 2 alerting rules over {len(labels_seen)} series: median {_fmt(statistics.median(timings))} per group evaluation")


# ----------------------------------------------------------------------------- memory


def bench_memory() -> None:
    proc = psutil.Process()
    before = proc.memory_info().rss
    store = SeriesStore()
    n_series, n_samples = 2000, 1440
    keys = [tuple(sorted({"__name__": "m", "i": str(i), "service": "s"}.items())) for i in range(n_series)]
    for j in range(n_samples):
        t = j * 15_000
        for key in keys:
            store.append(key, t, float(j))
    stats = store.stats()
    after = proc.memory_info().rss
    total = n_series * n_samples
    print(f"memory: {total} samples in {n_series} series: buffers {stats['bytes_per_sample']:.1f} B/sample "
          f"(16 B live: int64 ms + float64); process RSS growth {(after - before) / total:.1f} B/sample incl. index and slack")


# ----------------------------------------------------------------------------- queries


def _series_data(instances: int, hours: float, interval_s: float, end_s: float) -> list[tuple[dict[str, str], np.ndarray, np.ndarray]]:
    n = int(hours * 3600 / interval_s) + 1
    t = (end_s - (n - 1) * interval_s + np.arange(n) * interval_s) * 1000
    rng = np.random.default_rng(7)
    out = []
    for i in range(instances):
        lam = np.full((len(BUCKETS), 1), 20.0)
        lam[-1] = 0.05  # few observations above the last finite bound: p99 interpolates inside a bucket
        increments = rng.poisson(lam, size=(len(BUCKETS), n)).astype(np.float64)
        cumulative = np.cumsum(np.cumsum(increments, axis=1), axis=0)  # monotone over time and over le
        for b, le in enumerate(BUCKETS):
            out.append(({"__name__": "x_bucket", "le": le, "instance": f"i{i}"}, t.astype(np.int64), cumulative[b]))
    return out


def _time(fn, repeat: int) -> float:
    fn()
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


LICHEN_SERVER = textwrap.dedent(
    """
    import sys, uvicorn
    from fastapi import FastAPI
    from lichen.observe.http_api import build_query_router
    from lichen.observe.promql import Engine
    from lichen.observe.series import SeriesStore
    store = SeriesStore.restore(sys.argv[1], retention_s=float(sys.argv[3]))
    app = FastAPI()
    app.include_router(build_query_router(store, Engine(store)))
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
    """
)


def _serve_lichen(store: SeriesStore, workdir: Path) -> tuple[subprocess.Popen, str]:
    """Lichen's query API in its own process (like the controller), loaded from a snapshot of the same store."""
    snapshot = workdir / "lichen.npz"
    store.snapshot(snapshot)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-c", LICHEN_SERVER, str(snapshot), str(port), str(store.retention_ms / 1000)])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/api/v1/status/buildinfo", timeout=2)
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("lichen query server did not start")


def _range_points(body: dict) -> dict[tuple, dict[float, float]]:
    return {
        tuple(sorted(s["metric"].items())): {float(t): float(v) for t, v in s["values"]}
        for s in body["data"]["result"]
    }


def _start_prometheus(data: list, workdir: Path) -> tuple[subprocess.Popen, str] | None:
    promtool, prometheus = shutil.which("promtool"), shutil.which("prometheus")
    if not promtool or not prometheus:
        print("  prometheus/promtool not installed: skipping the comparison")
        return None
    om = workdir / "data.om"
    with open(om, "w") as fh:
        fh.write("# TYPE x histogram\n")
        for labels, t, v in data:
            lab = ",".join(f'{k}="{val}"' for k, val in sorted(labels.items()) if k != "__name__")
            prefix = f"x_bucket{{{lab}}} "
            fh.writelines(f"{prefix}{int(val)} {ts / 1000:.3f}\n" for ts, val in zip(t.tolist(), v.tolist(), strict=True))
        fh.write("# EOF\n")
    tsdb = workdir / "tsdb"
    started = time.perf_counter()
    subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(om), str(tsdb)], check=True, capture_output=True, timeout=600)
    print(f"  backfilled Prometheus TSDB with promtool in {time.perf_counter() - started:.1f} s")
    om.unlink()
    config = workdir / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1h\nscrape_configs: []\n")
    port = _free_port()
    proc = subprocess.Popen(
        [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tsdb}", f"--web.listen-address=127.0.0.1:{port}",
         "--storage.tsdb.retention.time=30d"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    print("  prometheus did not become ready: skipping the comparison")
    return None


def bench_queries(instances: int, hours: float, interval_s: float, repeat: int) -> None:
    end_s = float(int(time.time()) // 60 * 60 - 600)
    data = _series_data(instances, hours, interval_s, end_s)
    store = SeriesStore(retention_s=hours * 3600 + 3600)
    for labels, t, v in data:
        key = tuple(sorted(labels.items()))
        for ts, val in zip(t.tolist(), v.tolist(), strict=True):
            store.append(key, ts, val)
    engine = Engine(store)
    n_samples = sum(len(t) for _, t, _ in data)
    start_s = end_s - hours * 3600
    print(f"query: {QUERY}")
    print(f"  data: {len(data)} series x {len(data[0][1])} samples = {n_samples} samples over {hours:g} h at {interval_s:g} s")
    lichen_instant = _time(lambda: engine.instant(QUERY, end_s), repeat)
    lichen_range = _time(lambda: engine.range(QUERY, start_s, end_s, 60), repeat)
    print(f"  lichen in-process:                  instant {_fmt(lichen_instant)}, range 6 h/60 s {_fmt(lichen_range)}")
    client = httpx.Client(timeout=120)
    params_i = {"query": QUERY, "time": end_s}
    params_r = {"query": QUERY, "start": start_s, "end": end_s, "step": 60}
    with tempfile.TemporaryDirectory(prefix="lichen-bench-") as tmp:
        lichen_proc, url = _serve_lichen(store, Path(tmp))
        prom = None
        try:
            prom = _start_prometheus(data, Path(tmp))
            # alternate the two servers call by call, so both see the same machine load
            sides = {"lichen": url} | ({"prometheus": prom[1]} if prom else {})
            timings: dict[tuple[str, str], list[float]] = {}
            for k in range(repeat + 1):
                for name, base in sides.items():
                    for kind, path, params in (("instant", "query", params_i), ("range", "query_range", params_r)):
                        t = time.perf_counter()
                        client.get(f"{base}/api/v1/{path}", params=params).raise_for_status()
                        if k:  # the first round warms caches
                            timings.setdefault((name, kind), []).append(time.perf_counter() - t)
            med = {key: statistics.median(v) for key, v in timings.items()}
            print(f"  lichen over HTTP (own process):     instant {_fmt(med['lichen', 'instant'])}, range {_fmt(med['lichen', 'range'])}")
            if prom is None:
                return
            print(f"  prometheus over HTTP (own process): instant {_fmt(med['prometheus', 'instant'])}, range {_fmt(med['prometheus', 'range'])}")
            print(
                f"  ratio lichen/prometheus: instant {med['lichen', 'instant'] / med['prometheus', 'instant']:.2f}x, "
                f"range {med['lichen', 'range'] / med['prometheus', 'range']:.2f}x"
            )
            lichen_points = _range_points(client.get(f"{url}/api/v1/query_range", params=params_r).json())
            prom_points = _range_points(client.get(f"{prom[1]}/api/v1/query_range", params=params_r).json())
            worst, compared = 0.0, 0
            for key, points in prom_points.items():
                mine = lichen_points.get(key, {})
                for t, v in points.items():
                    other = mine.get(t, float("nan"))
                    compared += 1
                    worst = max(worst, abs(other - v) / max(1e-12, abs(v))) if other == other else float("inf")
            extra = sum(len(p) for p in lichen_points.values()) - compared
            print(f"  same answer: {compared} range points compared, max relative difference {worst:.2e}, "
                  f"{extra} extra points on Lichen's side")
        finally:
            for proc in [lichen_proc] + ([prom[0]] if prom else []):
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller data for a fast run")
    parser.add_argument("--targets", type=int, default=50)
    parser.add_argument("--series", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--instances", type=int, default=20, help="histogram instances for the query bench (x 10 buckets)")
    parser.add_argument("--hours", type=float, default=6.0)
    parser.add_argument("--interval", type=float, default=15.0, help="sample interval of the query data, seconds")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if args.quick:
        args.instances, args.rounds, args.repeat = 5, 3, 3
    print(f"lichen observe bench (pid {os.getpid()}, {psutil.cpu_count()} CPUs)")
    store = bench_scrape(args.targets, args.series, args.rounds)
    bench_evaluation(store, args.targets, args.series)
    bench_memory()
    bench_queries(args.instances, args.hours, args.interval, args.repeat)


if __name__ == "__main__":
    main()
