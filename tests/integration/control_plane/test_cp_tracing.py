"""Tracing under a real `lichen up`: W3C trace context from a client through the gateway, a replica, the
replica's own span and its call through the gateway to a second service, exported as OTLP/HTTP protobuf to a
local receiver that decodes it; the ids in the log lines; exemplars on the latency histograms."""

from __future__ import annotations

import json
import shutil

import httpx
import pytest
import yaml
from cp_harness import FAST_PROBES, HERE, App, wait_until

from lichen.testing.otlp import OtlpReceiver

pytestmark = pytest.mark.slow
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_PARENT = "00f067aa0ba902b7"


def _spec(app: App, tracing: dict) -> None:
    shutil.copy(HERE / "tracesvc.py", app.dir / "tracesvc.py")
    app.write_spec(front={"entrypoint": "tracesvc:Front", "probes": FAST_PROBES},
                   back={"entrypoint": "tracesvc:Back", "probes": FAST_PROBES})
    spec = yaml.safe_load((app.dir / "lichen.yaml").read_text())
    spec["observability"] = {"tracing": tracing}
    (app.dir / "lichen.yaml").write_text(yaml.safe_dump(spec))


def _log_lines(app: App) -> list[dict]:
    lines = []
    for path in (app.dir / ".lichen" / "logs").glob("*.log"):
        for line in path.read_text(errors="replace").splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
    return lines


def test_one_request_is_one_trace_across_gateway_replicas_and_a_call_between_them(make_app) -> None:
    app: App = make_app()
    with OtlpReceiver() as receiver:
        _spec(app, {"endpoint": receiver.endpoint, "sampling_ratio": 1.0})
        app.up()
        gateway = f"http://127.0.0.1:{app.gateway_port}"
        answer = httpx.get(f"{gateway}/front/chain", timeout=10,
                           headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-01", "tracestate": "vendor=1"})
        assert answer.status_code == 200, answer.text

        spans = receiver.wait_for(lambda found: sum(s.trace_id == CLIENT_TRACE for s in found) >= 5)
        trace = {s.span_id: s for s in spans if s.trace_id == CLIENT_TRACE}
        by_parent = {s.parent_span_id: s for s in trace.values()}
        # the client's parent -> gateway -> front -> score -> gateway -> back, each the parent of the next
        first = by_parent[CLIENT_PARENT]
        assert (first.service, first.kind, first.name) == ("lichen-gateway", "SERVER", "GET /front")
        assert first.attributes["http.response.status_code"] == 200
        assert first.attributes["lichen.service"] == "front" and first.attributes["url.path"] == "/front/chain"
        front = by_parent[first.span_id]
        assert (front.service, front.kind, front.name) == ("front", "SERVER", "GET /chain")
        assert front.resource["service.instance.id"].startswith("front-")
        score = by_parent[front.span_id]
        assert (score.service, score.name, score.kind) == ("front", "score", "INTERNAL")
        second = by_parent[score.span_id]
        assert (second.service, second.attributes["lichen.service"]) == ("lichen-gateway", "back")
        back = by_parent[second.span_id]
        assert (back.service, back.kind, back.name) == ("back", "SERVER", "GET /leaf")
        for outer, inner in ((first, front), (front, score), (score, second), (second, back)):
            assert outer.start_ns <= inner.start_ns and inner.end_ns <= outer.end_ns + 5_000_000  # 5 ms clock slack

        # a request without a traceparent starts a trace at the gateway (sampled: ratio 1)
        assert httpx.get(f"{gateway}/back/leaf", timeout=10).status_code == 200
        rooted = receiver.wait_for(lambda found: any(s.service == "lichen-gateway" and not s.parent_span_id
                                                     for s in found))
        root = next(s for s in rooted if s.service == "lichen-gateway" and not s.parent_span_id)
        receiver.wait_for(lambda found: any(s.parent_span_id == root.span_id and s.service == "back" for s in found))

        # a refused request is a span too, and its log line carries the ids
        assert httpx.get(f"{gateway}/nowhere", headers={"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-01"}).status_code == 404
        denied = receiver.wait_for(lambda found: any(s.trace_id == "ab" * 16 for s in found))
        denied_span = next(s for s in denied if s.trace_id == "ab" * 16)
        assert denied_span.attributes["http.response.status_code"] == 404

        def logged() -> dict | None:
            lines = _log_lines(app)
            wanted = {"chained": None, "leaf_served": None, "request_denied": None, "front_request": None}
            for line in lines:
                if line.get("event") in wanted and line.get("trace_id") in (CLIENT_TRACE, "ab" * 16):
                    wanted[line["event"]] = line
                if line.get("event") == "request" and line.get("service") == "front" and \
                        line.get("trace_id") == CLIENT_TRACE:
                    wanted["front_request"] = line
            return wanted if all(wanted.values()) else None

        lines = wait_until(logged, "log lines carrying the trace's ids", timeout_s=10)
        assert lines["chained"]["span_id"] == score.span_id  # the service's own span was current
        assert lines["front_request"]["span_id"] == front.span_id
        assert lines["leaf_served"]["span_id"] == back.span_id
        assert lines["request_denied"]["span_id"] == denied_span.span_id

        # exemplars: the latency buckets name a sampled trace, in OpenMetrics as Prometheus asks for it
        openmetrics = {"accept": "application/openmetrics-text; version=1.0.0"}
        gateway_metrics = httpx.get(f"{gateway}/metrics", headers=openmetrics).text
        assert f'# {{trace_id="{CLIENT_TRACE}"}}' in gateway_metrics
        assert "trace_id" not in httpx.get(f"{gateway}/metrics").text  # the classic text format has none
        replica = next(r for r in app.replicas() if r["service"] == "front")
        replica_metrics = httpx.get(f"http://127.0.0.1:{replica['port']}/metrics", headers=openmetrics).text
        assert f'# {{trace_id="{CLIENT_TRACE}"}}' in replica_metrics
        assert receiver.bad_posts == 0


def test_unsampled_traces_are_passed_on_but_not_exported(make_app) -> None:
    app: App = make_app()
    with OtlpReceiver() as receiver:
        _spec(app, {"endpoint": receiver.endpoint, "sampling_ratio": 0.0})
        app.up()
        gateway = f"http://127.0.0.1:{app.gateway_port}"
        for _ in range(5):
            assert httpx.get(f"{gateway}/front/chain", timeout=10).status_code == 200
        # a caller's sampled flag wins over the ratio (parent-based), so this one is exported whole
        sampled = "11" * 16
        assert httpx.get(f"{gateway}/front/chain", timeout=10,
                         headers={"traceparent": f"00-{sampled}-{'22' * 8}-01"}).status_code == 200
        spans = receiver.wait_for(lambda found: sum(s.trace_id == sampled for s in found) >= 5)
        assert {s.trace_id for s in spans} == {sampled}  # none of the five unsampled requests left a span
        unsampled_lines = [line for line in _log_lines(app) if line.get("event") == "leaf_served"
                           and line.get("trace_id") != sampled]
        assert len(unsampled_lines) == 5 and all(line.get("trace_id") for line in unsampled_lines)
