"""The services the tracing test runs under ``lichen up``: ``front`` calls ``back`` through the gateway with
``lichen.client``, inside a span of its own made with the plain OpenTelemetry API, and both log a line."""

from __future__ import annotations

from opentelemetry import trace

from lichen import Service, endpoint
from lichen.client import Client
from lichen.logs import get_logger

log = get_logger("tracesvc")
tracer = trace.get_tracer("tracesvc")


class Front(Service):
    def setup(self) -> None:
        self.back = Client("back", timeout=5.0)

    @endpoint("/chain", method="GET")
    def chain(self) -> dict:
        with tracer.start_as_current_span("score"):  # a service's own span: a child of the replica's
            answer = self.back.get("/leaf").raise_for_status().json()
            log.info("chained")
        return {"back": answer}


class Back(Service):
    @endpoint("/leaf", method="GET")
    def leaf(self) -> dict:
        log.info("leaf_served")
        return {"ok": True}
