"""A replica's side of tracing: the request's trace context in, a server span out, the context on to calls it makes.

Every request's ``traceparent`` (and ``tracestate``) is kept for the time it
is handled (:data:`INCOMING`), so :mod:`lichen.client` passes it on and every
log line carries ``trace_id`` and ``span_id`` (:data:`lichen.logs.TRACE`),
whether or not this replica records spans.

With ``LICHEN_TRACE_ENDPOINT`` set (``observability.tracing`` in the spec),
the replica records a ``SERVER`` span per request with the OpenTelemetry SDK
(``ParentBased(TraceIdRatioBased(ratio))``, a batch span processor, the
OTLP/HTTP protobuf exporter), as the current span while the endpoint runs: a
service's own spans (``opentelemetry.trace.get_tracer(__name__)``) are its
children, and a call made with :mod:`lichen.client` carries the innermost
span as its parent. The SDK is imported only when tracing is on.
"""

from __future__ import annotations

import contextvars
from typing import Any, NamedTuple

from lichen.trace_contexts import parse_traceparent
from lichen.sdk.settings import ReplicaSettings

INCOMING: contextvars.ContextVar[Incoming | None] = contextvars.ContextVar("lichen_incoming_trace", default=None)
"""The trace context of the request being handled, as it arrived."""


class Incoming(NamedTuple):
    """A request's ``traceparent`` and ``tracestate`` as they arrived (the ids logged are its trace and parent)."""

    traceparent: str
    tracestate: str | None
    trace_id: int
    parent_id: int

    def log_ids(self) -> tuple[str, str]:
        return f"{self.trace_id:032x}", f"{self.parent_id:016x}"


def incoming(headers: list[tuple[bytes, bytes]]) -> Incoming | None:
    """The valid trace context among an ASGI scope's headers, or None."""
    traceparent = tracestate = None
    for name, value in headers:
        if name == b"traceparent":
            traceparent = value
        elif name == b"tracestate":
            tracestate = value
    parent = parse_traceparent(traceparent)
    if parent is None:
        return None
    assert traceparent is not None
    return Incoming(traceparent.decode("latin-1").strip(), tracestate.decode("latin-1") if tracestate else None,
                    parent.trace_id, parent.parent_id)


class _SpanIds:
    """The recording span's ids for log lines (a service's own nested span included)."""

    __slots__ = ("span",)

    def __init__(self, span: Any) -> None:
        self.span = span

    def log_ids(self) -> tuple[str, str]:
        from opentelemetry import trace

        current = trace.get_current_span()
        context = (current if current.get_span_context().is_valid else self.span).get_span_context()
        return f"{context.trace_id:032x}", f"{context.span_id:016x}"


class ReplicaTracer:
    """Server spans of one replica, exported to ``settings.trace_endpoint`` (see the module docs)."""

    def __init__(self, settings: ReplicaSettings) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.propagate import get_global_textmap
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        from opentelemetry import context, trace

        assert settings.trace_endpoint is not None
        resource = Resource.create({key: value for key, value in {
            "service.name": settings.service or "lichen-service", "service.instance.id": settings.replica,
            "service.version": settings.revision}.items() if value})
        self.provider = TracerProvider(resource=resource,
                                       sampler=ParentBased(TraceIdRatioBased(settings.trace_sampling_ratio)))
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.trace_endpoint)))
        trace.set_tracer_provider(self.provider)  # a service's own get_tracer() joins the same provider
        self.tracer = self.provider.get_tracer("lichen.sdk")
        self._propagator = get_global_textmap()
        self._context = context
        self._trace = trace
        self._server = trace.SpanKind.SERVER
        self._error = trace.Status(trace.StatusCode.ERROR)

    def start(self, method: str, path: str, found: Incoming | None) -> tuple[Any, Any, _SpanIds]:
        """A server span for a request, made current: ``(span, token to detach, its ids for log lines)``."""
        carrier = {"traceparent": found.traceparent, **({"tracestate": found.tracestate} if found.tracestate
                                                          else {})} if found is not None else {}
        parent = self._propagator.extract(carrier)
        span = self.tracer.start_span(method, context=parent, kind=self._server,
                                      attributes={"http.request.method": method, "url.path": path})
        token = self._context.attach(self._trace.set_span_in_context(span, parent))
        return span, token, _SpanIds(span)

    def end(self, span: Any, token: Any, method: str, endpoint: str, status: int) -> None:
        self._context.detach(token)
        span.update_name(f"{method} {endpoint}")
        span.set_attribute("http.route", endpoint)
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(self._error)
        span.end()

    def shutdown(self) -> None:
        """Export what is queued (the replica is stopping)."""
        self.provider.shutdown()


def outgoing_headers() -> dict[str, str]:
    """The ``traceparent`` (and ``tracestate``) a call made now carries: the innermost recording span as its
    parent when this replica records spans, else the request's own context passed on as it arrived."""
    found = INCOMING.get()
    if _recording:
        from opentelemetry.propagate import inject

        carrier: dict[str, str] = {}
        inject(carrier)
        if carrier:
            return carrier
    if found is None:
        return {}
    return {"traceparent": found.traceparent, **({"tracestate": found.tracestate} if found.tracestate else {})}


_recording = False


def start_tracing(settings: ReplicaSettings) -> ReplicaTracer | None:
    """The replica's tracer when ``LICHEN_TRACE_ENDPOINT`` is set, else None (no span is recorded)."""
    global _recording
    if settings.trace_endpoint is None:
        return None
    tracer = ReplicaTracer(settings)
    _recording = True
    return tracer
