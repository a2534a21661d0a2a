"""The gateway's lean span path: OTLP protobuf written by hand and read back with the generated classes, the
exporter against a real local receiver (retries, failures, a full queue), the traceparent sent upstream, and
exemplars in the OpenMetrics exposition."""

from __future__ import annotations

import time

import pytest

from lichen.gateway.heads import request_head
from lichen.gateway.metrics import GatewayMetrics
from lichen.gateway.requests import Request
from lichen.gateway.spans import SpanEncoder, SpanExporter, SpanRecord, Tracing, encode_request, resource_bytes
from lichen.spec.models import TracingSpec
from lichen.testing.otlp import OtlpReceiver, decode_spans
from lichen.trace_contexts import parse_traceparent

TRACE, SPAN, PARENT = 0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x1122334455667788, 0x00F067AA0BA902B7


def record(status: int = 200, parent: int = PARENT, revision: str = "r1", span: int = SPAN) -> SpanRecord:
    return SpanRecord(TRACE, span, parent, 1_700_000_000_000_000_000, 1_700_000_000_002_500_000, "POST", "/api",
                      "api", status, revision, b"/api/v1/score?user=1", "10.0.0.7")


def test_the_hand_written_protobuf_is_what_the_generated_classes_read() -> None:
    body = encode_request([record(), record(503, parent=0, revision="", span=SPAN + 1)],
                          resource_bytes({"service.name": "lichen-gateway", "service.namespace": "shop"}),
                          SpanEncoder(), scope_version="1.2.3")
    ok, failed = decode_spans(body)
    assert (ok.trace_id, ok.span_id, ok.parent_span_id) == (f"{TRACE:032x}", f"{SPAN:016x}", f"{PARENT:016x}")
    assert (ok.name, ok.kind, ok.service, ok.scope) == ("POST /api", "SERVER", "lichen-gateway", "lichen.gateway")
    assert ok.resource == {"service.name": "lichen-gateway", "service.namespace": "shop"}
    assert (ok.start_ns, ok.end_ns - ok.start_ns) == (1_700_000_000_000_000_000, 2_500_000)
    assert ok.attributes == {"http.request.method": "POST", "url.path": "/api/v1/score", "http.route": "/api",
                             "lichen.service": "api", "http.response.status_code": 200, "client.address": "10.0.0.7",
                             "lichen.revision": "r1"}
    assert ok.status_code == "UNSET" and ok.flags == 0x301  # sampled, with a remote parent
    assert failed.parent_span_id == "" and failed.status_code == "ERROR" and failed.flags == 0x101
    assert "lichen.revision" not in failed.attributes and failed.attributes["http.response.status_code"] == 503


def test_the_encoder_reuses_bytes_but_never_mixes_values() -> None:
    encoder = SpanEncoder()
    encoder.MAX_CACHED = 3  # forces the caches to clear while encoding
    records = [record(200 + i, revision=f"rev-{i}") for i in range(10)]
    spans = decode_spans(encode_request(records, b"", encoder))
    assert [s.attributes["lichen.revision"] for s in spans] == [f"rev-{i}" for i in range(10)]
    assert [s.attributes["http.response.status_code"] for s in spans] == list(range(200, 210))


def test_spans_reach_a_real_receiver_and_a_retryable_answer_is_tried_again() -> None:
    with OtlpReceiver() as receiver:
        receiver.fail_next = (2, 503)
        exporter = SpanExporter(f"{receiver.endpoint}/v1/traces", {"service.name": "lichen-gateway"}, interval_s=0.05)
        for i in range(5):
            exporter.record(record(span=SPAN + i))
        spans = receiver.wait_for(lambda found: len(found) == 5)
        exporter.close()
    assert sorted(int(s.span_id, 16) - SPAN for s in spans) == [0, 1, 2, 3, 4]
    assert receiver.posts == 3 and exporter.counts == {"exported": 5, "dropped_queue_full": 0, "export_failed": 0}


def test_a_refused_batch_is_counted_not_retried_and_a_full_queue_drops_the_excess() -> None:
    with OtlpReceiver() as receiver:
        receiver.fail_next = (1, 400)
        exporter = SpanExporter(f"{receiver.endpoint}/v1/traces", {}, interval_s=30.0, max_queue=3, batch_size=10)
        for i in range(5):
            exporter.record(record(span=SPAN + i))
        assert exporter.counts["dropped_queue_full"] == 2
        exporter.close()  # flushes the three queued: the receiver refuses them
    assert receiver.posts == 1 and exporter.counts["export_failed"] == 3 and receiver.received == 0


def test_an_unreachable_collector_loses_the_batch_within_the_timeout_and_says_so() -> None:
    with OtlpReceiver() as receiver:
        url = f"{receiver.endpoint}/v1/traces"
    exporter = SpanExporter(url, {}, interval_s=0.01, export_timeout_s=0.5)
    exporter.record(record())
    deadline = time.monotonic() + 10
    while exporter.counts["export_failed"] == 0 and time.monotonic() < deadline:
        exporter._wake.wait(0.05)
    exporter.close()
    assert exporter.counts == {"exported": 0, "dropped_queue_full": 0, "export_failed": 1}


def test_closing_flushes_what_is_queued() -> None:
    with OtlpReceiver() as receiver:
        exporter = SpanExporter(f"{receiver.endpoint}/v1/traces", {}, interval_s=60.0, batch_size=4)
        for i in range(10):
            exporter.record(record(span=SPAN + i))
        exporter.close()
        assert receiver.received == 10 and exporter.counts["exported"] == 10


@pytest.mark.parametrize("incoming", [None, b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"])
def test_the_replica_gets_the_gateways_span_as_its_parent_and_tracestate_as_it_came(incoming: bytes | None) -> None:
    tracing = Tracing(TracingSpec(endpoint="http://127.0.0.1:9"), "shop")
    try:
        span = tracing.begin(incoming)
    finally:
        tracing.close()
    request = Request()
    request.method = "GET"
    request.headers = [(b"host", b"x"), (b"tracestate", b"vendor=1")]
    if incoming:
        request.headers.append((b"traceparent", incoming))
        request.traceparent = incoming
    request.trace = span
    head = request_head(request, "/v1/x", "rid", False, "10.0.0.1")
    sent = [line.split(b": ", 1)[1] for line in head.split(b"\r\n") if line.startswith(b"traceparent: ")]
    assert len(sent) == 1 and b"tracestate: vendor=1\r\n" in head
    parent = parse_traceparent(sent[0])
    assert parent is not None and parent.parent_id == span.span_id and parent.sampled
    if incoming:
        assert parent.trace_id == TRACE and span.parent_id == PARENT
    else:
        assert span.parent_id == 0


def test_without_tracing_the_head_passes_the_callers_traceparent_unchanged() -> None:
    request = Request()
    request.headers = [(b"traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")]
    assert b"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n" in request_head(
        request, "/", "rid", False, "10.0.0.1")


def test_exemplars_appear_in_openmetrics_only() -> None:
    metrics = GatewayMetrics()
    metrics.observe_request("/api", "api", "r1", 200, 0.003, TRACE)
    metrics.observe_request("/api", "api", "r1", 200, 0.2)
    text = metrics.exposition(openmetrics=True).decode()
    bucket = next(line for line in text.splitlines() if 'le="0.005"' in line)
    assert f'# {{trace_id="{TRACE:032x}"}} 0.003' in bucket
    assert text.count("trace_id=") == 1 and "trace_id" not in metrics.exposition().decode()
