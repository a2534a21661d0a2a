"""The gateway's spans: one per request, recorded as a tuple and exported as OTLP/HTTP protobuf off the event loop.

Why not the OpenTelemetry SDK here: a profile of the SDK on these machines
gave about 2.5 µs to build a ``ReadableSpan`` on the request path and 25 µs
per span to encode it with the SDK's OTLP encoder (and an exporter thread
holds the GIL the event loop needs), against a gateway that spends tens of
microseconds on a whole request. So a finished request's span is written
straight into the OTLP wire format (:class:`SpanEncoder`, reusing the bytes
of attributes it has seen: a route, a service, a status) and queued
(:meth:`SpanExporter.record`); a thread joins a batch into one request
(:func:`wrap_spans`) and posts it to ``/v1/traces``. The bytes are the protobuf ``ExportTraceServiceRequest``
every collector reads; the tests decode them with the generated protobuf
classes. Replicas use the OpenTelemetry SDK itself (:mod:`lichen.sdk.traces`),
so a service's own spans join the trace.

Export follows the OpenTelemetry batch processor's shape: at most
``max_queue`` spans wait (more are dropped and counted), a batch of at most
``batch_size`` leaves every ``interval_s`` or as soon as a batch is full, a
retryable answer (429, 502, 503, 504, a connection error) is tried again with
backoff within ``export_timeout_s``, and on close what is queued is flushed.
"""

from __future__ import annotations

import http.client
import random
import struct
import threading
import time
from collections import deque
from typing import Any, NamedTuple
from urllib.parse import urlsplit


from lichen.trace_contexts import is_sampled, parse_traceparent, ratio_bound
from lichen.logs import get_logger
from lichen.spec.models import TracingSpec

log = get_logger("lichen.gateway")

_RETRYABLE = frozenset({429, 502, 503, 504})
_PACK_TIMES = struct.Struct("<BQBQ").pack
_STATUS_ERROR = b"\x7a\x02\x18\x02"  # status { code: STATUS_CODE_ERROR }
_KIND_SERVER = b"\x30\x02"
_FLAGS_ROOT = b"\x85\x01" + (0x101).to_bytes(4, "little")
_FLAGS_REMOTE_PARENT = b"\x85\x01" + (0x301).to_bytes(4, "little")


class SpanRecord(NamedTuple):
    """One finished gateway span, as the request path leaves it (encoded later, off the loop)."""

    trace_id: int
    span_id: int
    parent_id: int
    """0 when the request carried no ``traceparent``"""
    start_ns: int
    end_ns: int
    method: str
    route: str
    service: str
    status: int
    revision: str
    url: bytes
    """the request target as it came (the query is cut off when encoded)"""
    client_ip: str


# ---------------------------------------------------------------- the protobuf wire format (what Lichen writes)

def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    if number < 16 and len(payload) < 128:  # one byte each for the tag and the length
        return bytes((number << 3 | 2, len(payload))) + payload
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _string_attribute(key: str, value: str) -> bytes:
    """``attributes`` (Span field 9) holding ``KeyValue{key, AnyValue{string_value}}``."""
    return _field(9, _field(1, key.encode()) + _field(2, _field(1, value.encode("utf-8", "replace"))))


def _int_attribute(key: str, value: int) -> bytes:
    return _field(9, _field(1, key.encode()) + _field(2, _varint(3 << 3) + _varint(value & ((1 << 64) - 1))))


def resource_bytes(attributes: dict[str, str]) -> bytes:
    """A ``Resource`` message with string attributes."""
    return b"".join(_field(1, _field(1, k.encode()) + _field(2, _field(1, v.encode()))) for k, v in attributes.items())


class SpanEncoder:
    """Encodes :class:`SpanRecord` s as OTLP ``Span`` messages, keeping the bytes of attributes it has seen."""

    MAX_CACHED = 4096

    def __init__(self) -> None:
        self._paths: dict[str, bytes] = {}
        """the ``url.path`` attribute by path"""
        self._blocks: dict[tuple[str, str, str, int, str, str], bytes] = {}
        """name, kind and every attribute but the path, by what they are made of: one lookup a span"""

    def _keep(self, cache: dict, key: Any, made: bytes) -> bytes:  # type: ignore[type-arg]
        if len(cache) >= self.MAX_CACHED:
            cache.clear()
        cache[key] = made
        return made

    def _block(self, key: tuple[str, str, str, int, str, str]) -> bytes:
        method, route, service, status, client_ip, revision = key
        return self._keep(self._blocks, key, b"".join((
            _field(5, f"{method} {route or '/'}".encode()), _KIND_SERVER, _string_attribute("http.request.method", method),
            _string_attribute("http.route", route), _string_attribute("lichen.service", service),
            _int_attribute("http.response.status_code", status), _string_attribute("client.address", client_ip),
            _string_attribute("lichen.revision", revision) if revision else b"",
            _STATUS_ERROR if status >= 500 else b"")))

    def span(self, record: SpanRecord | tuple) -> bytes:  # type: ignore[type-arg]
        """One ``Span`` message (without its enclosing field header)."""
        trace_id, span_id, parent_id, start_ns, end_ns, method, route, service, status, revision, url, client_ip = record
        path = url.partition(b"?")[0][:512].decode("latin-1")
        key = (method, route, service, status, client_ip, revision)
        block = self._blocks.get(key) or self._block(key)
        path_attribute = self._paths.get(path) or self._keep(self._paths, path, _string_attribute("url.path", path))
        # flags (field 16, fixed32): sampled, plus whether the parent came from another process (it always does)
        return b"".join((b"\x0a\x10", trace_id.to_bytes(16, "big"), b"\x12\x08", span_id.to_bytes(8, "big"),
                         b"\x22\x08" + parent_id.to_bytes(8, "big") if parent_id else b"",
                         _PACK_TIMES(0x39, start_ns, 0x41, end_ns), block,
                         path_attribute,
                         _FLAGS_REMOTE_PARENT if parent_id else _FLAGS_ROOT))

    def span_field(self, record: SpanRecord | tuple) -> bytes:  # type: ignore[type-arg]
        """The span as a ``ScopeSpans.spans`` field, ready to be joined into a request."""
        return _field(2, self.span(record))


def wrap_spans(span_fields: list[bytes], resource: bytes, scope_name: str = "lichen.gateway",
               scope_version: str = "") -> bytes:
    """An ``ExportTraceServiceRequest`` of one resource and one instrumentation scope holding spans already
    encoded as ``ScopeSpans.spans`` fields (:meth:`SpanEncoder.span_field`)."""
    scope = _field(1, scope_name.encode()) + (_field(2, scope_version.encode()) if scope_version else b"")
    scope_spans = _field(1, scope) + b"".join(span_fields)
    resource_spans = _field(1, resource) + _field(2, scope_spans)
    return _field(1, resource_spans)


def encode_request(records: list[SpanRecord], resource: bytes, encoder: SpanEncoder, scope_name: str = "lichen.gateway",
                   scope_version: str = "") -> bytes:
    """An ``ExportTraceServiceRequest`` of one resource and one instrumentation scope holding ``records``."""
    return wrap_spans([encoder.span_field(record) for record in records], resource, scope_name, scope_version)


# ---------------------------------------------------------------- export

class _Poster:
    """One keep-alive connection to the collector (the standard library's: a third of httpx's CPU a post, and
    the thread's CPU is taken from the event loop's GIL); reopened after an error."""

    def __init__(self, url: str, timeout_s: float) -> None:
        parts = urlsplit(url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if self.https else 80)
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.timeout_s = timeout_s
        self.connection: http.client.HTTPConnection | None = None

    def post(self, body: bytes) -> int:
        if self.connection is None:
            kind = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            self.connection = kind(self.host, self.port, timeout=self.timeout_s)
        try:
            self.connection.request("POST", self.path, body=body, headers={"content-type": "application/x-protobuf"})
            response = self.connection.getresponse()
            response.read()
        except BaseException:
            self.close()
            raise
        if response.will_close:
            self.close()
        return response.status

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def __enter__(self) -> _Poster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SpanExporter:
    """Queues spans from the event loop and posts them from a thread (see the module docs)."""

    def __init__(self, url: str, resource: dict[str, str], *, export_timeout_s: float = 10.0, max_queue: int = 2048,
                 batch_size: int = 512, interval_s: float = 1.0, version: str = "") -> None:
        self.url = url
        self.export_timeout_s = export_timeout_s
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.interval_s = interval_s
        self.version = version
        self.resource = resource_bytes(resource)
        self.queue: deque[bytes] = deque()
        """encoded spans waiting for the thread (a deque: appended by the loop, taken by the thread, safely)"""
        self.counts = {"exported": 0, "dropped_queue_full": 0, "export_failed": 0}
        self._encoder = SpanEncoder()
        self._wake = threading.Event()
        self._closing = False
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lichen-span-export", daemon=True)
        self._thread.start()

    def record(self, record: SpanRecord | tuple) -> None:  # type: ignore[type-arg]
        """From the event loop: encode one span and queue it (dropped and counted when the queue is full).

        Encoding here rather than in the thread costs the loop the same CPU, but leaves the thread almost
        nothing to do under the GIL: measured, a thread that encoded its batches took the GIL from the loop
        often enough to cost about three times what the encoding does (``bench/gateway.py --tracing``).
        """
        queue = self.queue
        if len(queue) >= self.max_queue:
            self.counts["dropped_queue_full"] += 1
            return
        queue.append(self._encoder.span_field(record))
        if len(queue) == self.batch_size:
            self._wake.set()

    def close(self, timeout_s: float = 5.0) -> None:
        """Flush what is queued and stop the thread, waiting at most ``timeout_s`` (0: let it finish alone)."""
        self._closing = True
        self._closed.set()
        self._wake.set()
        if timeout_s > 0:
            self._thread.join(timeout_s)

    def _take(self) -> list[bytes]:
        queue, batch = self.queue, []
        while queue and len(batch) < self.batch_size:
            batch.append(queue.popleft())
        return batch

    def _run(self) -> None:
        with _Poster(self.url, self.export_timeout_s) as client:
            while True:
                self._wake.wait(self.interval_s)
                self._wake.clear()
                closing = self._closing
                while self.queue:
                    batch = self._take()
                    body = wrap_spans(batch, self.resource, scope_version=self.version)
                    outcome = "exported" if self._post(client, body) else "export_failed"
                    self.counts[outcome] += len(batch)
                    if len(self.queue) < self.batch_size and not closing:
                        break  # a partial batch waits for the next interval
                if closing:
                    return

    def _post(self, client: _Poster, body: bytes) -> bool:
        deadline = time.monotonic() + self.export_timeout_s
        pause_s = 0.1
        while True:
            error: str
            try:
                status = client.post(body)
                if status < 300:
                    return True
                error = f"HTTP {status}"
                retryable = status in _RETRYABLE
            except (OSError, http.client.HTTPException) as exc:
                error, retryable = f"{type(exc).__name__}: {exc}", True
            if not retryable or self._closing or time.monotonic() + pause_s >= deadline or self._closed.wait(pause_s):
                log.warning("span_export_failed", url=self.url, error=error[:200])
                return False
            pause_s = min(pause_s * 2, 2.0)


# ---------------------------------------------------------------- one request's span

class ActiveSpan:
    """The gateway's span of one request while it is handled: its ids, and the ``traceparent`` sent upstream."""

    __slots__ = ("trace_id", "span_id", "parent_id", "sampled", "start_ns", "header", "revision")

    def __init__(self, trace_id: int, span_id: int, parent_id: int, sampled: bool, start_ns: int) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id
        self.sampled = sampled
        self.start_ns = start_ns
        self.header = b"00-%032x-%016x-%s" % (trace_id, span_id, b"01" if sampled else b"00")
        """the ``traceparent`` the replica gets: this span is its parent"""
        self.revision = ""

    def log_ids(self) -> tuple[str, str]:
        return f"{self.trace_id:032x}", f"{self.span_id:016x}"


class Tracing:
    """Tracing as ``observability.tracing`` configures it: sampling, and the exporter spans go to."""

    def __init__(self, spec: TracingSpec, app: str = "", version: str = "") -> None:
        self.spec = spec
        self.app = app
        self.bound = ratio_bound(spec.sampling_ratio)
        resource = {"service.name": "lichen-gateway", **({"service.namespace": app} if app else {})}
        self.exporter = SpanExporter(spec.traces_url(), resource, export_timeout_s=spec.export_timeout_s,
                                     version=version)

    def begin(self, traceparent: bytes | None) -> ActiveSpan:
        """A span for a request that carried ``traceparent`` (or none): a child of its parent, or a new trace."""
        parent = parse_traceparent(traceparent) if traceparent is not None else None
        trace_id = parent.trace_id if parent is not None else random.getrandbits(128) or 1
        sampled = is_sampled(parent, trace_id, self.bound)
        return ActiveSpan(trace_id, random.getrandbits(64) or 1, parent.parent_id if parent else 0, sampled,
                          time.time_ns())

    def end(self, span: ActiveSpan, method: str, url: bytes, route: str, service: str, status: int,
            client_ip: str) -> None:
        """Record a sampled span: the request was answered with ``status``."""
        if span.sampled:
            self.exporter.record((span.trace_id, span.span_id, span.parent_id, span.start_ns,  # a SpanRecord
                                  time.time_ns(), method, route, service, status, span.revision, url, client_ip))

    def close(self, timeout_s: float = 5.0) -> None:
        self.exporter.close(timeout_s)


def retuned(current: Tracing | None, spec: TracingSpec | None, app: str) -> Tracing | None:
    """The tracing a (re)loaded config asks for: ``current`` when unchanged, else a new one (or none), the old
    one closed after flushing what it queued."""
    if current is not None and current.spec == spec and current.app == app:
        return current
    if current is not None:
        current.close(timeout_s=0)  # on the event loop: its thread flushes what it queued by itself
    return Tracing(spec, app) if spec is not None else None
