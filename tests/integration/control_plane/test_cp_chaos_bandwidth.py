"""`lichen chaos`'s bandwidth fault on a real app under `lichen up`: a service's 32 KiB answers leave the gateway
no faster than the limit, measured against the same answers without the fault in the same test, complete and
intact; the limit is one link shared by every answer of the service, not a limit per connection."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml
from cp_harness import FAST_PROBES, HERE, LICHEN, wait_until

pytestmark = pytest.mark.slow
BLOB = "".join(chr(ord("a") + i % 26) for i in range(32 * 1024))


def _app(make_app):
    app = make_app()
    shutil.copy(HERE / "blobsvc.py", app.dir / "blobsvc.py")
    service = {"entrypoint": "blobsvc:Blob", "termination_grace_s": 2, "probes": FAST_PROBES, "replicas": 1,
               "routes": [{"prefix": "/blob", "strip_prefix": True}]}
    (app.dir / "lichen.yaml").write_text(yaml.safe_dump({"app": "chaosbw", "gateway": {"port": app.gateway_port},
                                                         "services": {"blob": service}}))
    app.up()
    return app


def _gateway_serves_the_fault(app) -> bool:
    """The gateway serves the config the controller wrote, and that config carries the fault."""
    written = json.loads(Path(app.status()["gateway"]["config"]).read_text())
    served = httpx.get(f"http://127.0.0.1:{app.gateway_port}/-/config", timeout=5).json()["generation"]
    return bool(written["services"]["blob"]["faults"]) and served == written["generation"]


def _loadtest(app) -> dict:
    done = app.cli("loadtest", str(app.dir), "--route", "/blob/blob", "--rate", "2", "--duration", "4s", "--json")
    return json.loads(done.stdout)


def test_a_bandwidth_limit_slows_large_answers_then_lifts(make_app) -> None:
    app = _app(make_app)
    before = _loadtest(app)
    path = app.dir / "experiment.yaml"
    path.write_text(yaml.safe_dump({"name": "bw", "load": {"route": "/blob/blob", "rate": 2}, "duration": "7s",
                                    "faults": [{"kind": "bandwidth", "service": "blob", "at": "500ms", "for_s": "6s",
                                                "rate_kbps": 800}],
                                    "hypotheses": ["failed requests == 0"]}))
    done = app.cli("chaos", str(app.dir), str(path), "--json", check=False, timeout_s=180)
    report = json.loads(done.stdout)
    assert done.returncode == 0 and report["held"], report
    during = report["load"]
    assert during["statuses"] == {"200": during["scheduled"]} == {"200": 14}  # slower, never broken
    fault = report["faults"][0]
    assert fault["kind"] == "bandwidth" and fault["failed"] == 0 and fault["detected_s"] is None
    assert app.status()["gateway"]["faults"] == {}  # lifted
    after = _loadtest(app)
    # 32 KiB at 100 kB/s is about 0.3 s, against milliseconds without the limit
    assert during["latency_ms"]["p50"] > 5 * before["latency_ms"]["p50"], (before["latency_ms"], during["latency_ms"])
    assert during["latency_ms"]["p50"] > 5 * after["latency_ms"]["p50"], (after["latency_ms"], during["latency_ms"])
    assert before["statuses"] == after["statuses"] == {"200": 8}


def test_the_limit_is_shared_by_every_answer_of_the_service(make_app) -> None:
    app = _app(make_app)
    url = f"http://127.0.0.1:{app.gateway_port}/blob/blob"
    with app.client() as client:
        client.set_faults("blob", [{"kind": "bandwidth", "rate_kbps": 800, "duration_s": 120}])
    wait_until(lambda: _gateway_serves_the_fault(app), "the gateway to serve the bandwidth fault", timeout_s=30)
    try:
        def timed(count: int) -> float:
            """Seconds until ``count`` answers fetched at once over their own connections are all in, each intact."""
            bodies: list[dict] = []

            def fetch() -> None:
                with httpx.Client(timeout=30) as client:
                    bodies.append(client.get(url).json())

            threads = [threading.Thread(target=fetch) for _ in range(count)]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - started
            assert bodies == [{"blob": BLOB}] * count
            return elapsed

        one, four = timed(1), timed(4)
        assert four > 2.5 * one, (one, four)  # four answers share one link: about four times as long as one
    finally:
        with app.client() as client:
            client.set_faults("blob", [])


def test_an_interrupted_run_clears_the_bandwidth_limit(make_app) -> None:
    app = _app(make_app)
    path = app.dir / "experiment.yaml"
    path.write_text(yaml.safe_dump({"name": "bw", "load": {"route": "/blob/blob", "rate": 2}, "duration": "70s",
                                    "faults": [{"kind": "bandwidth", "service": "blob", "at": "500ms", "for_s": "60s",
                                                "rate_kbps": 800}]}))
    process = subprocess.Popen([*LICHEN, "chaos", str(app.dir), str(path)], cwd=app.dir, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    wait_until(lambda: app.status()["gateway"]["faults"].get("blob"), "the bandwidth fault set", timeout_s=30)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and "cleared the traffic faults of blob" in err, err
    assert app.status()["gateway"]["faults"] == {}
