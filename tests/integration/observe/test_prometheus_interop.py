"""A real Prometheus scrapes Lichen's /federate, and answers the same query as Lichen's API.

Needs the `prometheus` binary (CI installs Debian's package); skipped without it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from lichen.observe.http_api import build_query_router
from lichen.observe.promql import Engine
from lichen.observe.series import SeriesStore

PROMETHEUS = shutil.which("prometheus")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(PROMETHEUS is None, reason="prometheus is not installed")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, what: str, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def test_prometheus_scrapes_federate(tmp_path: Path) -> None:
    store = SeriesStore()
    engine = Engine(store)
    stop = threading.Event()

    def feed() -> None:  # a counter and a gauge, sampled every 200 ms with wall-clock timestamps
        n = 0
        while not stop.is_set():
            now_ms = int(time.time() * 1000)
            store.append({"__name__": "lichen_requests_total", "service": "recs", "replica": "recs-0"}, now_ms, float(n * 10))
            store.append({"__name__": "lichen_inflight_requests", "service": "recs", "replica": "recs-0"}, now_ms, 3.0)
            n += 1
            stop.wait(0.2)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    app = FastAPI()
    app.include_router(build_query_router(store, engine))
    lichen_port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=lichen_port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    _wait(lambda: server.started, "lichen's query API")

    prom_port = _free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s}\n"
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
    prom = f"http://127.0.0.1:{prom_port}"
    try:
        _wait(lambda: httpx.get(f"{prom}/-/ready", timeout=2).status_code == 200, "prometheus to be ready")
        result = _wait(
            lambda: httpx.get(f"{prom}/api/v1/query", params={"query": "lichen_inflight_requests"}, timeout=5).json()["data"]["result"],
            "prometheus to scrape /federate",
        )
        labels = result[0]["metric"]
        assert labels["service"] == "recs" and labels["replica"] == "recs-0" and result[0]["value"][1] == "3"
        # both answer the same query shape for the same series
        _wait(
            lambda: len(httpx.get(f"{prom}/api/v1/query", params={"query": "lichen_requests_total[10s]"}, timeout=5).json()["data"]["result"][0]["values"]) >= 3,
            "a few scrapes",
        )
        now = time.time()
        mine = httpx.get(f"http://127.0.0.1:{lichen_port}/api/v1/query", params={"query": "count by (service) (lichen_requests_total)", "time": now}).json()
        theirs = httpx.get(f"{prom}/api/v1/query", params={"query": "count by (service) (lichen_requests_total)", "time": now}).json()
        assert mine["data"]["result"][0]["metric"] == theirs["data"]["result"][0]["metric"] == {"service": "recs"}
        assert mine["data"]["result"][0]["value"][1] == theirs["data"]["result"][0]["value"][1] == "1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        stop.set()
        server.should_exit = True
