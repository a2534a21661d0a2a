"""A real Prometheus federates Lichen's /federate, and answers the same queries with the same values as Lichen's API.

The feeder appends one sample per series, then waits until Prometheus holds
it (it scrapes /federate every 200 ms), so Prometheus stores exactly the
samples Lichen holds (same timestamps, same values). Then every query is
asked of both over the same range and the values must agree: counters with a
reset, gauges, a histogram, aggregation and comparison.

Needs the `prometheus` binary (CI installs Debian's package); skipped without it.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from waiting import free_port, wait_until

from lichen.observe.http_api import build_query_router
from lichen.observe.promql import Engine
from lichen.observe.series import SeriesStore

PROMETHEUS = shutil.which("prometheus")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(PROMETHEUS is None, reason="prometheus is not installed")]

SAMPLES = 24  # per series, one per Prometheus scrape (200 ms): about 5 s of data
BUCKETS = ("0.05", "0.1", "0.5", "+Inf")

# Each is asked of both over the whole fed range; each must return at least one series.
QUERIES = [
    "lichen_requests_total",
    "rate(lichen_requests_total[2s])",
    "increase(lichen_requests_total[3s])",
    "sum by (service) (rate(lichen_requests_total[2s]))",
    "resets(lichen_requests_total[5s])",
    "avg_over_time(lichen_inflight_requests[2s])",
    "max_over_time(lichen_inflight_requests[2s])",
    "delta(lichen_inflight_requests[2s])",
    "lichen_inflight_requests > 2",
    "histogram_quantile(0.9, sum by (le) (rate(lichen_request_duration_seconds_bucket[2s])))",
]


def _fed(i: int) -> list[tuple[dict[str, str], float]]:
    """The i-th sample of every series: uneven increments, a counter reset at 12, a histogram."""
    base = {"service": "recs", "job": "recs"}
    r0 = {**base, "replica": "recs-0", "instance": "recs-0"}
    r1 = {**base, "replica": "recs-1", "instance": "recs-1"}
    c0 = float(sum((k * 7) % 5 + 1 for k in range(i + 1))) if i < 12 else float(3 * (i - 11))
    c1 = float(sum((k * 3) % 4 for k in range(i + 1)) * 2.5)
    rows = [
        ({"__name__": "lichen_requests_total", **r0}, c0),
        ({"__name__": "lichen_requests_total", **r1}, c1),
        ({"__name__": "lichen_inflight_requests", **r0}, float((i * 7) % 5)),
        ({"__name__": "lichen_inflight_requests", **r1}, float((i * 2) % 3) + 0.5),
    ]
    cumulative = 0.0
    for j, le in enumerate(BUCKETS):  # cumulative bucket counts, growing by an uneven amount per sample
        cumulative += i * (j + 1) + (i * j) % 3
        rows.append(({"__name__": "lichen_request_duration_seconds_bucket", **r0, "le": le}, cumulative))
    return rows


def _as_floats(result: list[dict]) -> dict[frozenset, list[tuple[int, float]]]:
    return {frozenset(s["metric"].items()): [(round(float(t) * 1000), float(v)) for t, v in s["values"]] for s in result}


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _get_json(url: str, **params: object) -> dict | None:
    try:
        return httpx.get(url, params=params, timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return None


def _count(prom: str, at: float) -> list[str]:
    """How many samples of each inflight series Prometheus holds in the minute before ``at``."""
    answer = _get_json(f"{prom}/api/v1/query", query="count_over_time(lichen_inflight_requests[1m])", time=at)
    return [s["value"][1] for s in (answer or {}).get("data", {}).get("result", [])]


def test_prometheus_federating_lichen_answers_with_the_same_values(tmp_path: Path) -> None:
    store = SeriesStore()
    engine = Engine(store)
    app = FastAPI()
    app.include_router(build_query_router(store, engine))
    lichen_port = free_port()
    lichen = f"http://127.0.0.1:{lichen_port}"
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=lichen_port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    wait_until(lambda: server.started, "lichen's query API")

    prom_port = free_port()
    prom = f"http://127.0.0.1:{prom_port}"
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 200ms, scrape_timeout: 200ms}\n"
        "scrape_configs:\n"
        "  - job_name: lichen\n"
        "    honor_labels: true\n"
        "    metrics_path: /federate\n"
        "    params: {'match[]': ['{__name__=~\"lichen_.*\"}']}\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{lichen_port}']}}]\n"
    )
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: (_get_json(f"{prom}/api/v1/status/buildinfo") or {}).get("status") == "success",
                   "prometheus to serve its API")
        first_ms = last_ms = 0
        for i in range(SAMPLES):
            now_ms = max(int(time.time() * 1000), last_ms + 1)  # strictly later than the previous sample
            for labels, value in _fed(i):
                store.append(labels, now_ms, value)
            first_ms, last_ms = first_ms or now_ms, now_ms
            # Prometheus scrapes /federate every 200 ms; the next sample waits until it holds this one
            wait_until(lambda i=i, t_ms=now_ms: _count(prom, (t_ms + 1) / 1000) == [str(i + 1)] * 2,
                       f"prometheus to hold sample {i + 1} of {SAMPLES}", timeout_s=30, every_s=0.05)

        at = (last_ms + 1) / 1000
        # the comparison is not vacuous: Lichen answers what was fed
        mine = httpx.get(f"{lichen}/api/v1/query", params={"query": 'lichen_requests_total{replica="recs-1"}',
                                                           "time": at}).json()["data"]["result"]
        assert [float(s["value"][1]) for s in mine] == [_fed(SAMPLES - 1)[1][1]]

        window = {"start": first_ms / 1000 - 1, "end": last_ms / 1000 + 1, "step": "0.25"}
        for query in QUERIES:
            mine = httpx.get(f"{lichen}/api/v1/query_range", params={"query": query, **window}).json()
            theirs = httpx.get(f"{prom}/api/v1/query_range", params={"query": query, **window}).json()
            assert mine["status"] == theirs["status"] == "success", (query, mine, theirs)
            lichen_series = _as_floats(mine["data"]["result"])
            prom_series = _as_floats(theirs["data"]["result"])
            assert lichen_series, f"{query}: no result from lichen"
            assert lichen_series.keys() == prom_series.keys(), (query, lichen_series.keys(), prom_series.keys())
            for labels, points in prom_series.items():
                ours = lichen_series[labels]
                assert [t for t, _ in ours] == [t for t, _ in points], (query, dict(labels), ours, points)
                wrong = [(t, a, b) for (t, a), (_, b) in zip(ours, points) if not _same(a, b)]
                assert not wrong, f"{query} {dict(labels)}: (t_ms, lichen, prometheus) differ at {wrong[:5]}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        server.should_exit = True
