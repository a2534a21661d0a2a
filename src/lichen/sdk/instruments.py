"""The replica's built-in Prometheus metrics (names fixed by docs/metrics.md).

Everything lives in one per-app :class:`~prometheus_client.CollectorRegistry`
so two apps in one process (tests) never collide and user metrics registered
on ``Service.metrics`` are served alongside. Labelled children are cached so
the request path does a dict lookup, not a ``labels()`` call.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_LATEST
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

# Inference latencies: 5 ms ... 60 s, plus a bucket at each SLO latency threshold of the service.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def slo_bucket_s(latency_ms: float) -> float:
    """The histogram bound of an SLO latency threshold: the replica's bucket and the rule's ``le`` come from it."""
    return float(latency_ms) / 1000.0


def latency_buckets_s(slo_latencies_ms: tuple[float, ...] = ()) -> tuple[float, ...]:
    """The standard buckets plus one at every SLO threshold, so a latency objective is counted exactly."""
    return tuple(sorted({*LATENCY_BUCKETS_S, *(slo_bucket_s(ms) for ms in slo_latencies_ms)}))
METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST
OPENMETRICS_CONTENT_TYPE = OPENMETRICS_LATEST
"""what a scraper asking for ``application/openmetrics-text`` gets: the format that carries exemplars"""
_KNOWN_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


class ReplicaMetrics:
    """``lichen_requests_total``, ``lichen_request_duration_seconds``, ``lichen_inflight_requests``,
    ``lichen_max_concurrency`` and ``lichen_ready`` on ``registry``."""

    def __init__(self, registry: CollectorRegistry, ready: Callable[[], bool],
                 slo_latencies_ms: tuple[float, ...] = ()) -> None:
        self.registry = registry
        self._requests = Counter(
            "lichen_requests_total",
            "Requests handled, by endpoint, method and HTTP status code.",
            ["endpoint", "method", "status"],
            registry=registry,
        )
        self._duration = Histogram(
            "lichen_request_duration_seconds",
            "Request latency in seconds, by endpoint and method.",
            ["endpoint", "method"],
            buckets=latency_buckets_s(slo_latencies_ms),
            registry=registry,
        )
        self._inflight = Gauge(
            "lichen_inflight_requests",
            "Requests being handled now (a timed-out sync handler counts until its thread returns).",
            ["endpoint"],
            registry=registry,
        )
        self._max_concurrency = Gauge(
            "lichen_max_concurrency", "The endpoint's concurrency limit.", ["endpoint"], registry=registry
        )
        ready_gauge = Gauge("lichen_ready", "1 once setup() finished and ready() is true.", registry=registry)
        ready_gauge.set_function(lambda: 1.0 if ready() else 0.0)
        try:
            ProcessCollector(registry=registry)
        except ValueError:  # already registered by the user
            pass
        self._count_children: dict[tuple[str, str, int], Callable[[float], None]] = {}
        self._duration_children: dict[tuple[str, str], Callable[[float], None]] = {}

    def declare_endpoint(self, endpoint: str, max_concurrency: int | None) -> Gauge:
        """Create the endpoint's series at zero and return its in-flight gauge child."""
        if max_concurrency is not None:
            self._max_concurrency.labels(endpoint).set(max_concurrency)
        return self._inflight.labels(endpoint)

    def observe(self, endpoint: str, method: str, status: int, duration_s: float, trace_id: str | None = None) -> None:
        """Count one finished request and record its latency; ``trace_id`` (a sampled trace) becomes the
        latency bucket's exemplar."""
        if method not in _KNOWN_METHODS:
            method = "OTHER"
        key = (endpoint, method, status)
        count = self._count_children.get(key)
        if count is None:
            count = self._count_children[key] = _adder(self._requests.labels(endpoint, method, str(status)))
        count(1.0)
        if trace_id is not None:
            self._duration.labels(endpoint, method).observe(duration_s, exemplar={"trace_id": trace_id})
            return
        record = self._duration_children.get(key[:2])
        if record is None:
            record = self._duration_children[key[:2]] = _recorder(self._duration.labels(endpoint, method))
        record(duration_s)

    def render(self, openmetrics: bool = False) -> bytes:
        """The registry in Prometheus text format, or OpenMetrics (which carries the exemplars)."""
        return (generate_openmetrics if openmetrics else generate_latest)(self.registry)


# Per request, the counter and histogram children are updated through their values, skipping the checks
# ``inc()``/``observe()`` repeat each time (about 1 us of a replica's per-request cost). These are
# prometheus_client's attributes of a labelled child since 0.4; without them, the public methods are used.
def _adder(counter: Counter) -> Callable[[float], None]:
    value = getattr(counter, "_value", None)
    return value.inc if callable(getattr(value, "inc", None)) else counter.inc  # type: ignore[union-attr]


def _recorder(histogram: Histogram) -> Callable[[float], None]:
    total, bounds, buckets = (getattr(histogram, name, None) for name in ("_sum", "_upper_bounds", "_buckets"))
    if not (callable(getattr(total, "inc", None)) and isinstance(bounds, list) and isinstance(buckets, list)
            and len(bounds) == len(buckets) and bounds and bounds[-1] == float("inf")):
        return histogram.observe
    add_total = total.inc  # type: ignore[union-attr]
    adds = [bucket.inc for bucket in buckets]

    def record(seconds: float) -> None:
        add_total(seconds)
        adds[bisect_left(bounds, seconds)](1.0)  # the first bucket whose bound is >= seconds, as observe() picks

    return record
