"""A local OTLP/HTTP trace receiver that decodes the real protobuf: for tests of tracing, and as a span sink in
``bench/gateway.py``.

It answers ``POST /v1/traces`` (``application/x-protobuf``) as an OpenTelemetry
collector does, decoding each body with the generated
``ExportTraceServiceRequest`` class of ``opentelemetry-proto``; a body that
does not decode is answered 400 and counted, never kept::

    with OtlpReceiver() as receiver:                 # listens on 127.0.0.1, a free port
        spec["observability"] = {"tracing": {"endpoint": receiver.endpoint}}
        ...
        spans = receiver.wait_for(lambda spans: len(spans) >= 3)

Each span is a :class:`ReceivedSpan` of plain data (hex ids, attributes as a
dict, its resource's ``service.name``). ``fail_next`` answers the next N posts
with a status, to test an exporter's retries.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class ReceivedSpan:
    trace_id: str
    span_id: str
    parent_span_id: str
    """empty for a root span"""
    name: str
    kind: str
    """``SERVER``, ``CLIENT``, ``INTERNAL``..."""
    service: str
    """the resource's ``service.name``"""
    start_ns: int
    end_ns: int
    status_code: str
    """``UNSET``, ``OK`` or ``ERROR``"""
    attributes: dict[str, Any] = field(default_factory=dict)
    resource: dict[str, Any] = field(default_factory=dict)
    scope: str = ""
    flags: int = 0


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind in ("string_value", "bool_value", "int_value", "double_value") else None


def decode_spans(body: bytes) -> list[ReceivedSpan]:
    """The spans of one ``ExportTraceServiceRequest``; raises ``google.protobuf.message.DecodeError``."""
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
    from opentelemetry.proto.trace.v1 import trace_pb2

    request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(ReceivedSpan(
                    trace_id=span.trace_id.hex(), span_id=span.span_id.hex(), parent_span_id=span.parent_span_id.hex(),
                    name=span.name, kind=trace_pb2.Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
                    service=str(resource.get("service.name", "")), start_ns=span.start_time_unix_nano,
                    end_ns=span.end_time_unix_nano,
                    status_code=trace_pb2.Status.StatusCode.Name(span.status.code).removeprefix("STATUS_CODE_"),
                    attributes={kv.key: _value(kv.value) for kv in span.attributes}, resource=resource,
                    scope=scope_spans.scope.name, flags=span.flags))
    return spans


class OtlpReceiver:
    """A threaded HTTP server on ``host`` (a free port unless ``port``) collecting decoded spans."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, keep: bool = True) -> None:
        self.spans: list[ReceivedSpan] = []
        self.keep = keep
        """False: a benchmark's sink, which counts posts and bytes without decoding them (a collector would run
        elsewhere; decoding here would take CPU from what is measured)"""
        self.received_bytes = 0
        self.received = 0
        self.posts = 0
        self.bad_posts = 0
        self.fail_next: tuple[int, int] | None = None
        """``(count, status)``: answer the next ``count`` posts with ``status`` and keep nothing from them"""
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                status = receiver._take(self.path, self.headers.get("content-type", ""), body)
                self.send_response(status)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.endpoint = f"http://{host}:{self.port}"
        """the base URL to configure (``observability.tracing.endpoint``); spans arrive at ``/v1/traces``"""
        self._thread = threading.Thread(target=self.server.serve_forever, name="otlp-receiver", daemon=True)
        self._thread.start()

    def _take(self, path: str, content_type: str, body: bytes) -> int:
        from google.protobuf.message import DecodeError

        with self._changed:
            self.posts += 1
            if self.fail_next is not None:
                count, status = self.fail_next
                self.fail_next = (count - 1, status) if count > 1 else None
                return status
        if path != "/v1/traces" or not content_type.startswith("application/x-protobuf"):
            with self._changed:
                self.bad_posts += 1
            return 404 if path != "/v1/traces" else 415
        if not self.keep:
            with self._changed:
                self.received_bytes += len(body)
            return 200
        try:
            spans = decode_spans(body)
        except DecodeError:
            with self._changed:
                self.bad_posts += 1
            return 400
        with self._changed:
            self.received += len(spans)
            if self.keep:
                self.spans.extend(spans)
            self._changed.notify_all()
        return 200

    def wait_for(self, condition: Callable[[list[ReceivedSpan]], bool], timeout_s: float = 15.0) -> list[ReceivedSpan]:
        """The spans once ``condition(spans)`` holds; AssertionError with what arrived after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not condition(self.spans):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"spans received ({len(self.spans)}) never met the condition: "
                                         f"{[(s.service, s.name, s.trace_id[:8]) for s in self.spans][:20]}")
                self._changed.wait(left)
            return list(self.spans)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> OtlpReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
