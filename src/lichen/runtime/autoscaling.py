"""The autoscaler's shell: read each autoscaled service's metric, run the policy, apply its decision.

Every ``autoscale.interval_s`` (default 1 s) per service, :class:`Autoscaler`
samples the service's metric, calls the pure
:func:`lichen.control.autoscaling.decide` and, when the count changes, sets it
through :meth:`Controller.set_replicas`: the reconciler starts replicas, or
stops them through confirmed drains, so a scale-down fails no request. Every
change is a ``Scaled`` event with the policy's reason; a metric without data
is an ``AutoscaleHeld`` event (once, until data returns) and a held count.

Metric source: the replicas' (and the gateway's) own ``/metrics``, read at
each tick, not the series store: the store scrapes every 5 s, too slow for a
decision every second and for a panic window of 6 s.

* ``inflight``: the larger of the sum of ``lichen_inflight_requests`` over the
  ready replicas and the gateway's ``lichen_gateway_inflight_requests`` for the
  service (requests the gateway holds, in a replica or on their way to one);
* ``rps``: the rate of ``lichen_requests_total`` between two reads, summed
  over replicas read twice;
* ``cpu``: CPU cores used by the replica processes (psutil), between two reads;
* ``latency_p95_ms``: the p95 of ``lichen_request_duration_seconds`` over the
  requests finished between two reads, all replicas together.

Scale to zero (``min: 0``): the gateway's ``lichen_gateway_requests_total``
plus ``lichen_gateway_inflight_requests`` for the service is the count of
requests it has started; while that count stands still with nothing in
flight the service is idle, and the policy takes it to zero once it was idle
for ``scale_to_zero_after_s``. No gateway reading: never idle. At zero no
replica has a metric: ``inflight`` is what the gateway holds, the others are 0,
and any activity asks for a replica again; the gateway's activator does not
wait for that tick, it calls :meth:`Autoscaler.activate` through the control
API (``POST /v1/services/<name>/activate``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import psutil
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.parser import text_string_to_metric_families

from lichen.clocks import Clock
from lichen.control import autoscaling
from lichen.errors import ConfigError, UnknownServiceError
from lichen.logs import get_logger
from lichen.runtime.endpoints import Ingress
from lichen.runtime.replicas import HOST, Replica, ServiceState
from lichen.spec.models import AutoscaleSpec

log = get_logger("lichen.autoscaler")
SAMPLES_KEPT_S = 600.0
READ_TIMEOUT_S = 0.5


class AutoscaledController(Protocol):
    """What the autoscaler reads and sets of the controller it runs under (a
    :class:`lichen.runtime.controlling.Controller`; tests pass the real one on virtual time)."""

    @property
    def clock(self) -> Clock: ...
    @property
    def stopping(self) -> bool: ...
    @property
    def services(self) -> Mapping[str, ServiceState]: ...
    @property
    def replicas(self) -> Mapping[str, Replica]: ...
    @property
    def gateway(self) -> Ingress | None: ...
    @property
    def metrics(self) -> CollectorRegistry: ...
    @property
    def autoscaling(self) -> dict[str, dict[str, Any]]:
        """each autoscaled service's last decision, for status"""
    def event(self, service: str, kind: str, reason: str = "", message: str = "", replica: str = "") -> None: ...
    def set_replicas(self, service: str, replicas: int, reason: str = "requested", message: str = "") -> None: ...
    def add_periodic(self, name: str, interval_s: float, fn: Callable[[], Any]) -> None: ...


class MetricReader(Protocol):
    async def read(self, service: str, metric: str, replicas: list[Replica], metrics_path: str) -> float | None:
        """The service's metric now, or None when there is no data."""

    async def activity(self, service: str) -> tuple[float, float] | None:
        """(requests the gateway has started for the service, requests in flight there now); None: no
        gateway, or it did not answer."""


@dataclass
class _Previous:
    at_s: float
    total: float
    buckets: dict[float, float] = field(default_factory=dict)


class HttpMetricReader:
    """Reads the replicas' ``/metrics`` (and the gateway's) over HTTP, and the processes' CPU with psutil."""

    def __init__(self, controller: AutoscaledController) -> None:
        self.controller = controller
        self.client = httpx.AsyncClient(timeout=READ_TIMEOUT_S)
        self._previous: dict[tuple[str, str], _Previous] = {}
        self._gateway_read: tuple[int, dict[str, Any] | None] | None = None
        self.round = 0
        """the autoscaler's tick: the gateway's page is read once per tick, for every service"""

    async def activity(self, service: str) -> tuple[float, float] | None:
        page = await self._gateway_page()
        if page is None:
            return None
        inflight = sum(s.value for s in _samples(page, "lichen_gateway_inflight_requests")
                       if s.labels.get("service") == service)
        finished = sum(s.value for s in _samples(page, "lichen_gateway_requests", "_total")
                       if s.labels.get("service") == service)
        return finished + inflight, inflight

    async def _gateway_page(self) -> dict[str, Any] | None:
        """The gateway's metrics, read once per tick for every service and reading."""
        gateway = self.controller.gateway
        if gateway is None or gateway.url is None:
            return None
        if self._gateway_read is None or self._gateway_read[0] != self.round:
            self._gateway_read = (self.round, await self._families(gateway.url + "/metrics"))
        return self._gateway_read[1]

    async def _families(self, url: str) -> dict[str, Any] | None:
        try:
            response = await self.client.get(url)
            response.raise_for_status()
        except httpx.HTTPError:
            return None
        return {f.name: f for f in text_string_to_metric_families(response.text)}

    async def read(self, service: str, metric: str, replicas: list[Replica], metrics_path: str) -> float | None:
        now = self.controller.clock.now()
        if metric == "cpu":
            return self._cpu(replicas, now)
        pages = await asyncio.gather(*(self._families(f"http://{HOST}:{r.record.port}{metrics_path}")
                                       for r in replicas))
        read = [(r, page) for r, page in zip(replicas, pages, strict=True) if page is not None]
        if metric == "inflight":
            gateway = await self._gateway_inflight(service)
            if not read and gateway is None:
                return None
            in_replicas = sum(s.value for _, page in read for s in _samples(page, "lichen_inflight_requests"))
            return max(in_replicas, gateway or 0.0)
        if metric == "rps":
            return self._rate(read, now)
        return self._p95_ms(read, now)

    async def _gateway_inflight(self, service: str) -> float | None:
        page = await self._gateway_page()
        if page is None:
            return None
        return sum(s.value for s in _samples(page, "lichen_gateway_inflight_requests")
                   if s.labels.get("service") == service)

    def _delta(self, key: tuple[str, str], now: float, total: float,
               buckets: dict[float, float] | None = None) -> tuple[float, float, dict[float, float]] | None:
        """(seconds, increase, bucket increases) since the last read of ``key``; None on the first or after a
        reset."""
        before = self._previous.get(key)
        self._previous[key] = _Previous(now, total, dict(buckets or {}))
        if before is None or total < before.total or now <= before.at_s:
            return None
        return now - before.at_s, total - before.total, {b: c - before.buckets.get(b, 0.0)
                                                          for b, c in (buckets or {}).items()}

    def _rate(self, read: list[tuple[Replica, dict[str, Any]]], now: float) -> float | None:
        rates = []
        for replica, page in read:
            total = sum(s.value for s in _samples(page, "lichen_requests", "_total"))
            delta = self._delta(("rps", replica.record.id), now, total)
            if delta is not None:
                rates.append(delta[1] / delta[0])
        return sum(rates) if rates else None

    def _cpu(self, replicas: list[Replica], now: float) -> float | None:
        cores = []
        for replica in replicas:
            with contextlib.suppress(psutil.Error, TypeError):
                times = psutil.Process(replica.record.pid).cpu_times()
                delta = self._delta(("cpu", replica.record.id), now, times.user + times.system)
                if delta is not None:
                    cores.append(delta[1] / delta[0])
        return sum(cores) if cores else None

    def _p95_ms(self, read: list[tuple[Replica, dict[str, Any]]], now: float) -> float | None:
        finished: dict[float, float] = {}
        for replica, page in read:
            buckets: dict[float, float] = {}
            for s in _samples(page, "lichen_request_duration_seconds", "_bucket"):
                bound = float(s.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + s.value
            delta = self._delta(("p95", replica.record.id), now, buckets.get(float("inf"), 0.0), buckets)
            if delta is not None:
                for bound, count in delta[2].items():
                    finished[bound] = finished.get(bound, 0.0) + count
        return quantile_ms(finished, 0.95)

    async def close(self) -> None:
        await self.client.aclose()


def _samples(page: dict[str, Any], name: str, suffix: str = "") -> Iterable[Any]:
    family = page.get(name)
    return [s for s in family.samples if s.name == name + suffix] if family is not None else []


def quantile_ms(cumulative: dict[float, float], q: float) -> float | None:
    """The ``q`` quantile in ms of a cumulative histogram (upper bound in s -> count), interpolated within the
    bucket as Prometheus' histogram_quantile does; None without observations."""
    bounds = sorted(cumulative)
    if not bounds or cumulative[bounds[-1]] <= 0:
        return None
    rank, lower, below = q * cumulative[bounds[-1]], 0.0, 0.0
    for bound in bounds:
        count = cumulative[bound]
        if count >= rank:
            if bound == float("inf"):
                return lower * 1000
            share = (rank - below) / (count - below) if count > below else 1.0
            return (lower + (bound - lower) * share) * 1000
        lower, below = bound, count
    return lower * 1000


class Autoscaler:
    """Runs the policy for every service with an ``autoscale`` section (:func:`attach_autoscaler`)."""

    def __init__(self, controller: AutoscaledController, reader: MetricReader | None = None) -> None:
        self.controller = controller
        self.reader: MetricReader = reader or HttpMetricReader(controller)
        self.samples: dict[str, list[autoscaling.Sample]] = {}
        self.states: dict[str, autoscaling.State] = {}
        self.due_at: dict[str, float] = {}
        self.held: set[str] = set()
        self.started: dict[str, float] = {}
        """each service's count of requests started at the gateway, at the last read"""
        self.idle_since: dict[str, float] = {}
        self.activated_at: dict[str, float] = {}
        self.desired_gauge = Gauge("lichen_autoscaler_desired_replicas", "Replicas the autoscaler wants.",
                                   ["service"], registry=controller.metrics)
        self.panic_gauge = Gauge("lichen_autoscaler_panic", "1 while the service's autoscaler is in panic mode.",
                                 ["service"], registry=controller.metrics)

    async def tick(self) -> None:
        """Decide for each autoscaled service whose interval is due."""
        controller = self.controller
        if controller.stopping:
            return
        if isinstance(self.reader, HttpMetricReader):
            self.reader.round += 1
        for name, state in list(controller.services.items()):
            scale = state.spec.autoscale
            if scale is None:
                self._forget(name)
                continue
            now = controller.clock.now()
            if now < self.due_at.get(name, now) - 1e-6:
                continue
            self.due_at[name] = now + scale.interval_s
            await self.decide(name)

    async def decide(self, name: str) -> autoscaling.Decision | None:
        controller = self.controller
        state = controller.services.get(name)
        if state is None or state.spec.autoscale is None:
            return None
        settings = autoscaling.Settings.from_spec(state.spec.autoscale)
        mine = [r for r in controller.replicas.values()
                if r.record.service == name and r.record.phase not in ("terminating",)]
        ready = [r for r in mine if r.record.published and r.handle is not None and r.record.port]
        began = controller.clock.now()
        try:
            value = await self.reader.read(name, settings.metric, ready, state.spec.metrics_path)
            activity = await self.reader.activity(name) if settings.min == 0 else None
        except Exception:  # a reader bug holds the count; it never stops the controller
            log.exception("autoscaler_read_failed", service=name)
            value, activity = None, None
        now = controller.clock.now()
        idle_since = self._idle_since(name, activity, now) if settings.min == 0 else None
        if self.activated_at.get(name, float("-inf")) >= began:
            idle_since = None  # woken by the activator while this tick read: not idle
        if value is None and activity is not None and not mine and state.replicas == 0:
            value = activity[1] if settings.metric == "inflight" else 0.0  # at zero: nothing but what is held
        elif value is None and idle_since is not None and activity is not None and activity[1] == 0:
            value = 0.0  # no request at all since the last read (a p95 or a rate has nothing to measure): idle
        samples = [s for s in self.samples.get(name, []) if s.at_s > now - SAMPLES_KEPT_S]
        if value is not None:
            samples.append(autoscaling.Sample(now, value))
        self.samples[name] = samples
        replicas = autoscaling.Replicas(state.replicas, len(ready), max(0, len(mine) - len(ready)))
        decision = autoscaling.decide(name, settings, samples, replicas, self.states.get(name, autoscaling.State()),
                                      now, idle_since)
        self.states[name] = decision.state
        before = state.replicas
        if decision.held and name not in self.held:
            controller.event(name, "AutoscaleHeld", "no metric data", decision.reason)
        if decision.held:
            self.held.add(name)
        else:
            self.held.discard(name)
        changed = decision.changed(before)
        if changed:
            controller.set_replicas(name, decision.desired, reason="autoscaler", message=decision.reason)
        self.desired_gauge.labels(name).set(decision.desired)
        self.panic_gauge.labels(name).set(1 if decision.panic else 0)
        controller.autoscaling[name] = {
            "desired": decision.desired, "ready": len(ready), "starting": replicas.starting,
            "metric": settings.metric, "value": decision.value, "panic": decision.panic, "held": decision.held,
            "idle_s": None if idle_since is None else round(now - idle_since, 1),
            "reason": decision.reason, "at": controller.clock.wall(),
            "last_change": decision.reason if changed else (controller.autoscaling.get(name) or {}).get("last_change"),
        }
        return decision

    def _idle_since(self, name: str, activity: tuple[float, float] | None, now: float) -> float | None:
        """Since when the gateway has started no request of ``name`` and has none in flight (None: active,
        or unknown)."""
        if activity is None:
            self.idle_since.pop(name, None)
            return None
        started, inflight = activity
        before = self.started.get(name)
        self.started[name] = started
        if inflight > 0 or (before is not None and started != before):
            # the last request came before this read: idle, if nothing more comes, since now at the latest
            self.idle_since[name] = now
            return None
        return self.idle_since.setdefault(name, now)

    def activate(self, name: str) -> dict[str, Any]:
        """The gateway holds a request of ``name``: at zero, ask for one replica now (the next ticks size it)."""
        controller = self.controller
        state = controller.services.get(name)
        if state is None:
            known = ", ".join(sorted(controller.services)) or "none"
            raise UnknownServiceError(f"no service named {name!r} (services: {known})")
        scale = state.spec.autoscale
        if scale is None or scale.min > 0:
            return {"service": name, "desired": state.replicas, "activated": False,
                    "reason": "not a service that scales to zero (autoscale.min: 0)"}
        self.activated_at[name] = self.idle_since[name] = controller.clock.now()
        if state.replicas > 0:
            return {"service": name, "desired": state.replicas, "activated": False, "reason": "already scaled up"}
        reason = f"scaled {name} 0→1: a request is held at the gateway"
        controller.set_replicas(name, 1, reason="activator", message=reason)
        entry = controller.autoscaling.setdefault(name, {  # before the first decision: a whole entry for status
            "ready": 0, "starting": 0, "metric": scale.metric, "value": None, "panic": False, "held": False,
            "idle_s": None})
        entry.update({"desired": 1, "reason": reason, "last_change": reason, "at": controller.clock.wall()})
        self.desired_gauge.labels(name).set(1)
        return {"service": name, "desired": 1, "activated": True, "reason": reason}

    async def aclose(self) -> None:
        """Close the metric reader's HTTP client (at shutdown)."""
        close = getattr(self.reader, "close", None)
        if close is not None:
            await close()

    def _forget(self, name: str) -> None:
        if self.controller.autoscaling.pop(name, None) is not None:
            for gauge in (self.desired_gauge, self.panic_gauge):
                with contextlib.suppress(KeyError):
                    gauge.remove(name)
        for table in (self.samples, self.states, self.due_at, self.started, self.idle_since, self.activated_at):
            table.pop(name, None)  # type: ignore[attr-defined]


def refuse_manual_scale(service: str, autoscale: AutoscaleSpec | None) -> None:
    """``lichen scale`` on an autoscaled service is refused: its next decision would undo the count."""
    if autoscale is not None:
        raise ConfigError(f"{service} is autoscaled (autoscale.min {autoscale.min}, max {autoscale.max}): lichen scale "
                          "would be undone by its next decision; change autoscale.min/max in lichen.yaml and run "
                          "lichen up")


def attach_autoscaler(controller: AutoscaledController, reader: MetricReader | None = None) -> Autoscaler:
    """Run the autoscaler as one of the controller's periodic tasks, every 1 s or the shortest ``interval_s``
    of the app's autoscaled services (each service is decided only once its own interval is due)."""
    autoscaler = Autoscaler(controller, reader)
    intervals = [s.spec.autoscale.interval_s for s in controller.services.values() if s.spec.autoscale is not None]
    controller.add_periodic("autoscaler", min([1.0, *intervals]), autoscaler.tick)
    return autoscaler
