"""The gateway's Prometheus metrics (names fixed by docs/metrics.md).

On the request path a metric update is a dict increment (the gateway is one
event loop, so no locks); a collector turns the dicts into Prometheus
families when ``/metrics`` is scraped. prometheus-client's own metric objects
take a lock and check labels on every update, which showed up in profiles.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, Exemplar, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

_COUNTERS = {
    "requests": ("lichen_gateway_requests_total", "Requests answered by the gateway, by route, service, revision and status.",
                 ("route", "service", "revision", "status")),
    "attempts": ("lichen_gateway_upstream_attempts_total",
                 "Attempts to reach an upstream, by outcome (ok, http_5xx, connect_error, reset, timeout, client_error).",
                 ("service", "revision", "outcome")),
    "retries": ("lichen_gateway_retries_total", "Retried upstream attempts.", ("service",)),
    "ejections": ("lichen_gateway_ejections_total", "Outlier ejections of an upstream.", ("service", "upstream")),
    "rate_limited": ("lichen_gateway_rate_limited_total", "Requests refused by a rate limit (429).", ("scope",)),
    "shed": ("lichen_gateway_shed_total", "Requests shed by admission control (503).", ("service",)),
    "denied": ("lichen_gateway_denied_total", "Requests denied, by reason.", ("reason",)),
    "activations": ("lichen_gateway_activations_total",
                    "Requests held for a service at zero, by outcome (released, timeout, full).", ("service", "outcome")),
    "websockets": ("lichen_gateway_websocket_upgrades_total",
                   "WebSocket upgrade requests, by outcome (upgraded, rejected by the replica, limit, error).",
                   ("service", "outcome")),
    "websocket_closes": ("lichen_gateway_websocket_closed_total",
                         "WebSockets closed, by reason (client_closed, upstream_closed, idle_timeout, shutdown).",
                         ("service", "reason")),
}
COLD_START_BUCKETS_S = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)


class InflightGauge:
    """In-flight requests of one service (``inc``/``dec`` like a prometheus-client gauge child)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self) -> None:
        self.value += 1

    def dec(self) -> None:
        self.value -= 1


class GatewayMetrics:
    def __init__(self) -> None:
        self.counts: dict[str, dict[tuple[str, ...], float]] = {key: {} for key in _COUNTERS}
        self.latency: dict[tuple[str, str, str], list[float]] = {}  # per-bucket counts, then +Inf, sum, count
        self.gauges: dict[str, InflightGauge] = {}
        self.held: dict[str, int] = {}
        self.cold_starts: dict[str, list[float]] = {}  # per-bucket counts, then +Inf, sum, count
        self.websockets_open: dict[str, int] = {}
        self.exemplars: dict[tuple[str, str, str], list[tuple[int, float, float] | None]] = {}
        """the latest sampled trace per latency bucket (OpenMetrics exemplars)"""
        self.span_counts: dict[str, int] | None = None
        """the span exporter's counts (exported, dropped_queue_full, export_failed) while tracing is on"""
        self.registry = CollectorRegistry()
        self.registry.register(self)

    # ---------------------------------------------------------------- updates (hot path)
    def _inc(self, kind: str, labels: tuple[str, ...]) -> None:
        table = self.counts[kind]
        table[labels] = table.get(labels, 0.0) + 1.0

    def observe_request(self, route: str, service: str, revision: str, status: int, seconds: float,
                        trace_id: int | None = None) -> None:
        """Count one answered request; ``trace_id`` (a sampled trace) becomes its latency bucket's exemplar."""
        self._inc("requests", (route, service, revision, str(status)))
        row = self.latency.get((route, service, revision))
        if row is None:
            row = self.latency[(route, service, revision)] = [0.0] * (len(LATENCY_BUCKETS_S) + 3)
        bucket = bisect_left(LATENCY_BUCKETS_S, seconds)
        row[bucket] += 1.0  # inline: the request path
        row[-2] += seconds
        row[-1] += 1.0
        if trace_id is not None:
            kept = self.exemplars.get((route, service, revision))
            if kept is None:
                kept = self.exemplars[(route, service, revision)] = [None] * (len(LATENCY_BUCKETS_S) + 1)
            kept[bucket] = (trace_id, seconds, time.time())  # an Exemplar only when scraped

    def attempt(self, service: str, revision: str, outcome: str) -> None:
        self._inc("attempts", (service, revision, outcome))

    def retry(self, service: str) -> None:
        self._inc("retries", (service,))

    def ejection(self, service: str, upstream: str) -> None:
        self._inc("ejections", (service, upstream))

    def rate_limit(self, scope: str) -> None:
        self._inc("rate_limited", (scope,))

    def shed_one(self, service: str) -> None:
        self._inc("shed", (service,))

    def deny(self, reason: str) -> None:
        self._inc("denied", (reason,))

    def activation(self, service: str, outcome: str) -> None:
        self._inc("activations", (service, outcome))

    def websocket(self, service: str, outcome: str) -> None:
        self._inc("websockets", (service, outcome))

    def websocket_closed(self, service: str, reason: str) -> None:
        self._inc("websocket_closes", (service, reason))

    def websocket_opened(self, service: str, delta: int) -> None:
        self.websockets_open[service] = self.websockets_open.get(service, 0) + delta

    def set_held(self, service: str, count: int) -> None:
        self.held[service] = count

    def observe_cold_start(self, service: str, seconds: float) -> None:
        row = self.cold_starts.get(service)
        if row is None:
            row = self.cold_starts[service] = [0.0] * (len(COLD_START_BUCKETS_S) + 3)
        _observe(row, COLD_START_BUCKETS_S, seconds)

    def inflight_gauge(self, service: str) -> InflightGauge:
        gauge = self.gauges.get(service)
        if gauge is None:
            gauge = self.gauges[service] = InflightGauge()
        return gauge

    # ---------------------------------------------------------------- exposition
    def collect(self) -> Iterator[Any]:
        for kind, (name, help_text, labels) in _COUNTERS.items():
            family = CounterMetricFamily(name, help_text, labels=list(labels))
            for values, count in sorted(self.counts[kind].items()):
                family.add_metric(list(values), count)
            yield family
        histogram = HistogramMetricFamily(
            "lichen_gateway_request_duration_seconds", "Time from request headers to the end of the response.",
            labels=["route", "service", "revision"],
        )
        for key, row in sorted(self.latency.items()):
            buckets = _buckets(row, LATENCY_BUCKETS_S)
            kept = self.exemplars.get(key)
            if kept is not None:
                buckets = [(le, value, _exemplar(kept[i])) if kept[i] is not None else (le, value)  # type: ignore[misc]
                           for i, (le, value) in enumerate(buckets)]
            histogram.add_metric(list(key), buckets, row[-2])
        yield histogram
        spans = CounterMetricFamily("lichen_gateway_spans", "Spans of sampled requests, by outcome (exported, "
                                    "dropped_queue_full, export_failed); none while tracing is off.", labels=["outcome"])
        for outcome, count in sorted((self.span_counts or {}).items()):
            spans.add_metric([outcome], count)
        yield spans
        cold = HistogramMetricFamily(
            "lichen_cold_start_seconds", "From the first request held for a service at zero to its release to a "
            "ready replica.", labels=["service"])
        for service, row in sorted(self.cold_starts.items()):
            cold.add_metric([service], _buckets(row, COLD_START_BUCKETS_S), row[-2])
        yield cold
        held = GaugeMetricFamily("lichen_gateway_held_requests",
                                 "Requests held while a service at zero starts a replica.", labels=["service"])
        for service, count in sorted(self.held.items()):
            held.add_metric([service], count)
        yield held
        gauge = GaugeMetricFamily("lichen_gateway_inflight_requests", "Requests the gateway is handling now.",
                                  labels=["service"])
        for service, value in sorted(self.gauges.items()):
            gauge.add_metric([service], value.value)
        yield gauge
        sockets = GaugeMetricFamily("lichen_gateway_websocket_connections", "WebSockets open now.", labels=["service"])
        for service, count in sorted(self.websockets_open.items()):
            sockets.add_metric([service], count)
        yield sockets

    def exposition(self, openmetrics: bool = False) -> bytes:
        """The text format, or OpenMetrics (which carries the exemplars) when the scraper asks for it."""
        return (generate_openmetrics if openmetrics else generate_latest)(self.registry)


def _exemplar(kept: tuple[int, float, float]) -> Exemplar:
    trace_id, seconds, wall = kept
    return Exemplar({"trace_id": f"{trace_id:032x}"}, seconds, wall)


def _observe(row: list[float], bounds: tuple[float, ...], seconds: float) -> None:
    """Count one observation in a histogram row (per-bucket counts, +Inf, sum, count)."""
    row[bisect_left(bounds, seconds)] += 1.0
    row[-2] += seconds
    row[-1] += 1.0


def _buckets(row: list[float], bounds: tuple[float, ...]) -> list[tuple[str, float]]:
    cumulative, buckets = 0.0, []
    for bound, count in zip((*bounds, float("inf")), row[:-2], strict=True):
        cumulative += count
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
    return buckets
