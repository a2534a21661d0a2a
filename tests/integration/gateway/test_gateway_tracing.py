"""A standalone `lichen gateway` with tracing: spans reach a real OTLP receiver, a reload turns tracing on and off
without a restart, SIGTERM flushes the queued spans, and a real Prometheus (exemplar storage on) scraping the
gateway links its latency histogram to the exported trace through an exemplar."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from gateway_harness import Backend, GatewayProcess
from waiting import free_port, wait_until

from lichen.testing.otlp import OtlpReceiver

pytestmark = pytest.mark.slow
PROMETHEUS = shutil.which("prometheus")


def _config(backend: Backend, **extra: object) -> dict:
    return {"routes": [{"prefix": "/api", "service": "api", "strip_prefix": True}],
            "services": {"api": {"endpoints": [backend.endpoint()], "discover_idempotent": False}}, **extra}


def test_reloads_turn_tracing_on_and_off_and_sigterm_flushes_what_is_queued(tmp_path: Path) -> None:
    backend = Backend("b0", tmp_path).wait()
    with OtlpReceiver() as receiver:
        gateway = GatewayProcess(_config(backend), tmp_path)
        try:
            assert httpx.get(f"{gateway.url}/api/hello").status_code == 200
            gateway.update(tracing={"endpoint": receiver.endpoint}, app="shop")
            wait_until(lambda: gateway.log_events("reloaded"), "the reload")
            traced = "5f" * 16
            answer = httpx.get(f"{gateway.url}/api/hello", headers={"traceparent": f"00-{traced}-{'7a' * 8}-01"})
            assert answer.status_code == 200
            span = receiver.wait_for(lambda found: any(s.trace_id == traced for s in found))[0]
            assert span.resource == {"service.name": "lichen-gateway", "service.namespace": "shop"}
            assert span.attributes["lichen.revision"] == "default" and span.parent_span_id == "7a" * 8
            gateway.update(tracing=None)
            wait_until(lambda: len(gateway.log_events("reloaded")) >= 2, "the second reload")
            for _ in range(3):
                assert httpx.get(f"{gateway.url}/api/hello").status_code == 200
            gateway.update(tracing={"endpoint": receiver.endpoint, "sampling_ratio": 1.0})  # the 1 s batch waits
            wait_until(lambda: len(gateway.log_events("reloaded")) >= 3, "the third reload")
            before = receiver.received
            for _ in range(4):
                assert httpx.get(f"{gateway.url}/api/hello").status_code == 200
        finally:
            gateway.stop()  # SIGTERM: the four queued spans are flushed before the gateway exits
            backend.kill()
        assert receiver.received - before == 4 and receiver.received == 5 and receiver.bad_posts == 0


@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus is not installed")
def test_a_real_prometheus_stores_the_gateways_exemplar_naming_the_exported_trace(tmp_path: Path) -> None:
    backend = Backend("b0", tmp_path).wait()
    with OtlpReceiver() as receiver:
        gateway = GatewayProcess(_config(backend, tracing={"endpoint": receiver.endpoint}), tmp_path)
        prom_port = free_port()
        (tmp_path / "prometheus.yml").write_text(
            "global: {scrape_interval: 200ms, scrape_timeout: 150ms}\n"
            f"scrape_configs:\n  - job_name: gateway\n    static_configs: [{{targets: ['127.0.0.1:{gateway.port}']}}]\n")
        prometheus = subprocess.Popen(
            [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{prom_port}", "--enable-feature=exemplar-storage"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert httpx.get(f"{gateway.url}/api/hello").status_code == 200
            span = receiver.wait_for(lambda found: len(found) >= 1)[0]

            def exemplar_traces() -> set[str]:
                try:
                    body = httpx.get(f"http://127.0.0.1:{prom_port}/api/v1/query_exemplars",
                                     params={"query": "lichen_gateway_request_duration_seconds_bucket",
                                             "start": "0", "end": "9999999999"}, timeout=2).json()
                except (httpx.HTTPError, ValueError):
                    return set()
                return {e["labels"]["trace_id"] for series in body.get("data") or [] for e in series["exemplars"]}

            assert wait_until(exemplar_traces, "Prometheus to store an exemplar", timeout_s=30) == {span.trace_id}
        finally:
            prometheus.terminate()
            prometheus.wait(timeout=30)
            gateway.stop()
            backend.kill()
