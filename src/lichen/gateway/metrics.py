"""The gateway's Prometheus metrics (names fixed by docs/metrics.md), with label children cached for the hot path."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "lichen_gateway_requests_total", "Requests answered by the gateway, by route, service, revision and status.",
            ["route", "service", "revision", "status"], registry=r,
        )
        self.duration = Histogram(
            "lichen_gateway_request_duration_seconds", "Time from request headers to the end of the response.",
            ["route", "service"], buckets=LATENCY_BUCKETS_S, registry=r,
        )
        self.attempts = Counter(
            "lichen_gateway_upstream_attempts_total",
            "Attempts to reach an upstream, by outcome (ok, http_5xx, connect_error, reset, timeout).",
            ["service", "revision", "outcome"], registry=r,
        )
        self.retries = Counter("lichen_gateway_retries_total", "Retried upstream attempts.", ["service"], registry=r)
        self.ejections = Counter(
            "lichen_gateway_ejections_total", "Outlier ejections of an upstream.", ["service", "upstream"], registry=r
        )
        self.rate_limited = Counter(
            "lichen_gateway_rate_limited_total", "Requests refused by a rate limit (429).", ["scope"], registry=r
        )
        self.shed = Counter("lichen_gateway_shed_total", "Requests shed by admission control (503).", ["service"], registry=r)
        self.denied = Counter("lichen_gateway_denied_total", "Requests denied, by reason.", ["reason"], registry=r)
        self.inflight = Gauge(
            "lichen_gateway_inflight_requests", "Requests the gateway is handling now.", ["service"], registry=r
        )
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe_request(self, route: str, service: str, revision: str, status: int, seconds: float) -> None:
        self._child(self.requests, route, service, revision, str(status)).inc()
        self._child(self.duration, route, service).observe(seconds)

    def attempt(self, service: str, revision: str, outcome: str) -> None:
        self._child(self.attempts, service, revision, outcome).inc()

    def retry(self, service: str) -> None:
        self._child(self.retries, service).inc()

    def ejection(self, service: str, upstream: str) -> None:
        self._child(self.ejections, service, upstream).inc()

    def rate_limit(self, scope: str) -> None:
        self._child(self.rate_limited, scope).inc()

    def shed_one(self, service: str) -> None:
        self._child(self.shed, service).inc()

    def deny(self, reason: str) -> None:
        self._child(self.denied, reason).inc()

    def inflight_gauge(self, service: str) -> Any:
        return self._child(self.inflight, service)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
