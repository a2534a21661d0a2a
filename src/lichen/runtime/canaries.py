"""Canary rollouts under ``lichen up``: move the gateway's weights through ``steps``, judge each interval, act.

A service with ``rollout.strategy: canary`` whose spec or code changes gets a
canary instead of a rolling update (:meth:`Controller.apply` starts it): the
new revision starts beside the stable one, which keeps all of its replicas.
Every ``analysis.interval_s``, :class:`Canaries` reads what each revision
answered at the gateway over that interval (the increases of
``lichen_gateway_upstream_attempts_total{service,revision,outcome}`` for
errors and of ``lichen_gateway_request_duration_seconds_bucket{service,revision}``
for latency) and evaluates each of ``analysis.queries`` on the embedded
Prometheus for both revisions, asks the pure
:func:`lichen.control.canary_analysis.analyse` for a verdict and :func:`~lichen.control.canary_analysis.step` for the next move,
and applies it:

* **advance**: the canary's weight goes to the next step, and its replica
  count to its share of the service (``canary_replicas``);
* **extend** / **pause**: the weight stays (a pause waits for a hand);
* **promote**: the canary revision becomes the service's; the stable replicas
  are drained by the reconciler's rolling path, the gateway sending all
  traffic to the promoted revision meanwhile;
* **abort**: the weight goes to 0 at once (the gateway sends everything to the
  stable revision; requests in flight on the canary finish), the service's
  revision goes back to the stable one, and the canary replicas are drained.

The canary's state (:class:`~lichen.control.canary_analysis.CanaryState`)
is saved with the service's desired state at every change, so a controller
killed mid-rollout resumes it where it stood: the weights are set again
before the gateway config is first written, and the first interval after the
restart only takes a new baseline. Every move is an event
(``CanaryStarted``, ``CanaryStep``, ``CanaryAnalysis``, ``CanaryPaused``,
``CanaryPromoted``, ``CanaryAborted``) with the analysis' numbers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from prometheus_client.parser import text_string_to_metric_families

from lichen.clocks import Clock
from lichen.control import canary_analysis as ca
from lichen.errors import ConfigError, UnknownServiceError
from lichen.logs import get_logger
from lichen.runtime.endpoints import EndpointRegistry, gateway_exposition
from lichen.runtime.replicas import ServiceState
from lichen.spec.models import ServiceSpec

log = get_logger("lichen.controller")
FAILED_OUTCOMES = ("http_5xx", "connect_error", "reset", "timeout")
"""attempt outcomes that count as the revision's error (``client_error`` is the client's)"""
READ_TIMEOUT_S = 1.0


class CanaryController(Protocol):
    """What :class:`Canaries` reads and sets of the controller (a :class:`~lichen.runtime.controlling.Controller`)."""

    @property
    def clock(self) -> Clock: ...
    @property
    def services(self) -> Mapping[str, ServiceState]: ...
    @property
    def endpoints(self) -> EndpointRegistry: ...
    @property
    def gateway(self) -> Any: ...
    def event(self, service: str, kind: str, reason: str = "", message: str = "", replica: str = "") -> None: ...
    def revision_spec(self, service: str, revision: str) -> ServiceSpec | None: ...
    def save_desired(self, name: str) -> None: ...
    def wake(self) -> None: ...
    def add_periodic(self, name: str, interval_s: float, fn: Any) -> None: ...


@dataclass
class Totals:
    """One revision's counters at the gateway, as read (cumulative)."""

    attempts: float = 0.0
    errors: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)

    def since(self, before: Totals) -> ca.RevisionWindow:
        """The increases since ``before`` (a counter that went down restarted: from zero)."""
        reset = self.attempts < before.attempts
        base = Totals() if reset else before
        buckets = tuple(sorted((le, max(0.0, count - base.buckets.get(le, 0.0))) for le, count in self.buckets.items()))
        return ca.RevisionWindow(self.attempts - base.attempts, max(0.0, self.errors - base.errors), buckets)


QueryFunction = Callable[[str, float], list[tuple[dict[str, str], float]]]
"""a PromQL instant query at a wall time: (labels, value) per series (``Engine.instant_samples``)"""


def query_text(query: str, service: str, revision: str, interval_s: float) -> str:
    """A canary query with ``$service``, ``$revision`` and ``$interval`` (the analysis interval, e.g. ``10s``)
    filled in."""
    interval = f"{interval_s:g}s" if float(interval_s).is_integer() else f"{int(interval_s * 1000)}ms"
    return query.replace("$service", service).replace("$revision", revision).replace("$interval", interval)


class RevisionReader(Protocol):
    async def read(self, service: str) -> dict[str, Totals] | None:
        """Each revision's totals at the gateway now; None when the gateway did not answer."""


class GatewayRevisionReader:
    """Reads the gateway's ``/metrics`` (a seam: tests pass a twin)."""

    def __init__(self, controller: CanaryController) -> None:
        self.controller = controller
        self.client = httpx.AsyncClient(timeout=READ_TIMEOUT_S)

    async def read(self, service: str) -> dict[str, Totals] | None:
        text = await gateway_exposition(self.client, self.controller.gateway)
        return None if text is None else revision_totals(text, service)

    async def aclose(self) -> None:
        await self.client.aclose()


def revision_totals(exposition: str, service: str) -> dict[str, Totals]:
    """Per revision of ``service``: attempts, failed attempts and latency buckets (summed over routes)."""
    totals: dict[str, Totals] = {}
    for family in text_string_to_metric_families(exposition):
        if family.name == "lichen_gateway_upstream_attempts":
            for sample in family.samples:
                labels = sample.labels
                if sample.name.endswith("_total") and labels.get("service") == service and labels.get("revision"):
                    entry = totals.setdefault(labels["revision"], Totals())
                    if labels.get("outcome") != "client_error":
                        entry.attempts += sample.value
                    if labels.get("outcome") in FAILED_OUTCOMES:
                        entry.errors += sample.value
        elif family.name == "lichen_gateway_request_duration_seconds":
            for sample in family.samples:
                labels = sample.labels
                if sample.name.endswith("_bucket") and labels.get("service") == service and labels.get("revision"):
                    buckets = totals.setdefault(labels["revision"], Totals()).buckets
                    le = float(labels["le"])
                    buckets[le] = buckets.get(le, 0.0) + sample.value
    return totals


@dataclass
class _Baseline:
    at_s: float
    weight: int
    totals: dict[str, Totals]


def begin(state: ServiceState, stable_revision: str, now: float) -> dict[str, Any]:
    """The ``canary`` entry of a service state whose new revision starts as a canary of ``stable_revision``."""
    return {"stable": stable_revision,
            "state": ca.CanaryState.begin(state.spec.rollout.steps, now).to_dict()}


def canary_plan_replicas(state: ServiceState) -> int:
    """The canary's replica count now (its share of the service at its weight; 1 before the first step)."""
    assert state.canary is not None
    weight = int(state.canary["state"].get("weight", 0))
    return ca.canary_replicas(state.replicas, weight)


def abandon(host: CanaryController, name: str, state: ServiceState, new_revision: str) -> None:
    """At start-up, a new spec replaces a saved canary: back to its stable revision (with an event), so the new
    revision rolls out from there."""
    assert state.canary is not None
    stable, canary = state.canary["stable"], state.revision
    spec = host.revision_spec(name, stable)
    if spec is None:
        return
    state.spec, state.revision, state.canary, state.previous_revision = spec, stable, None, ""
    host.event(name, "CanaryAbandoned", "lichen up with a new revision",
               f"the canary of {canary} was in progress when the controller stopped; back to {stable}, then "
               f"{new_revision} rolls out")
    host.save_desired(name)


def refuse_second_rollout(name: str, state: ServiceState | None, new_revision: str) -> None:
    """A new revision while a canary runs is refused, naming the running one."""
    if state is None or state.canary is None or new_revision == state.revision:
        return
    weight = state.canary["state"].get("weight")
    raise ConfigError(f"{name}: a canary rollout of revision {state.revision} is in progress (weight {weight}%, stable "
                      f"{state.canary['stable']}); finish it with 'lichen rollout promote {name}' or 'lichen rollout "
                      f"abort {name}' before rolling out another revision")


class Canaries:
    """Drives every service's canary (:func:`attach_canaries`)."""

    def __init__(self, controller: CanaryController, reader: RevisionReader | None = None,
                 query: QueryFunction | None = None) -> None:
        self.controller = controller
        self.reader: RevisionReader = reader or GatewayRevisionReader(controller)
        self.query = query
        self.announce: Callable[[str, dict[str, str], dict[str, str]], None] | None = None
        """raises an alert through the app's receivers (the embedded alert engine's ``announce``)"""
        """evaluates ``analysis.queries`` (the embedded Prometheus under ``lichen up``); None: they are inconclusive"""
        self.baselines: dict[str, _Baseline] = {}
        self.settling: dict[str, tuple[str, str]] = {}
        """services whose rollout ended: (revision kept, revision leaving) until the leaving one has no replica"""
        self.last: dict[str, dict[str, Any]] = {}
        """each service's last analysis, for ``lichen rollout status``"""
        self.last_stable: dict[str, ca.RevisionWindow] = {}
        """each canary's last interval in which the stable revision had traffic (the comparison at weight 100)"""
        self.query_errors: set[tuple[str, str]] = set()
        self.unready_since: dict[str, float] = {}
        """when this controller first saw a canary with no ready replica (progress_deadline_s counts from it)"""
        self.applied: dict[str, dict[str, float] | None] = {}
        """the split last handed to the gateway, per service (set again only when it changes)"""
        for name, state in controller.services.items():  # restored from the state store: weights before any render
            if state.canary is not None:
                self._set_weights(name, state)

    # ------------------------------------------------------------ the loop
    async def tick(self) -> None:
        controller = self.controller
        for name in list(self.settling):
            self._settle(name)
        for name, state in list(controller.services.items()):
            if state.canary is None:
                self.baselines.pop(name, None)
                continue
            await self.drive(name, state)

    async def drive(self, name: str, state: ServiceState) -> None:
        assert state.canary is not None
        controller = self.controller
        now = controller.clock.now()
        entry = state.canary  # replaced (not mutated) by every change: a hand that acts while we read is seen
        canary = ca.CanaryState.from_dict(entry["state"])
        stable = entry["stable"]
        settings = ca.AnalysisSettings.from_spec(state.spec.rollout.analysis)
        full = self._set_weights(name, state)
        if not self._ready_count(name, state.revision):
            # progress_deadline_s counts from when this controller saw the canary without a ready replica: a
            # restart, or a blip of its one replica, never aborts it at once
            deadline_s = state.spec.rollout.progress_deadline_s
            since = self.unready_since.setdefault(name, now)
            if now - since > deadline_s:
                decision = ca.abort(canary, f"the canary had no ready replica for progress_deadline_s "
                                            f"({deadline_s:g} s)", now)
                self.apply(name, state, decision, stable)
            self.baselines.pop(name, None)
            return
        self.unready_since.pop(name, None)
        if not full:  # the step's replicas are still starting: its interval starts once they all serve
            self.baselines.pop(name, None)
            return
        baseline = self.baselines.get(name)
        if baseline is not None and baseline.weight == canary.weight and now - baseline.at_s < settings.interval_s - 1e-6:
            return  # not due: the gateway's page is read once per interval, not every tick
        totals = await self.reader.read(name)  # paused too: a pause holds the weight, a failure still rolls back
        if totals is None or state.canary is not entry:
            return  # the gateway did not answer (judged at the next read), or a hand acted meanwhile
        if baseline is None or baseline.weight != canary.weight:
            self.baselines[name] = _Baseline(now, canary.weight, totals)  # an interval starts at its weight
            return
        window_canary = totals.get(state.revision, Totals()).since(baseline.totals.get(state.revision, Totals()))
        window_stable = totals.get(stable, Totals()).since(baseline.totals.get(stable, Totals()))
        earlier = ""
        if window_stable.requests >= max(settings.min_requests, 1):
            self.last_stable[name] = window_stable
        elif name in self.last_stable:  # at weight 100 the stable revision answers nothing: its last interval
            window_stable, earlier = self.last_stable[name], " (stable: its last interval with traffic)"
        checks = [ca.QueryCheck.from_spec(q, *(await self._query_values(name, q.query, state.revision, stable,
                                                                       settings.interval_s)))
                  for q in state.spec.rollout.analysis.queries]
        if state.canary is not entry:
            return  # a hand acted while the queries ran: its decision stands
        verdict = ca.analyse(window_canary, window_stable, settings, checks)
        self.baselines[name] = _Baseline(now, canary.weight, totals)
        decision = ca.step(canary, verdict, settings, state.spec.rollout.steps, now)
        self.last[name] = {"at": controller.clock.wall(), "verdict": verdict.kind,
                           "reasons": [r + earlier for r in verdict.reasons[:1]] + list(verdict.reasons[1:]),
                           "numbers": dict(verdict.numbers), "action": decision.action}
        if verdict.kind != "pass" or decision.action == "extend":
            controller.event(name, "CanaryAnalysis", verdict.kind, ("; ".join(verdict.reasons) + earlier)[:1000])
        self.apply(name, state, decision, stable)

    def _ready_count(self, name: str, revision: str) -> int:
        return sum(1 for e in self.controller.endpoints.endpoints(name) if e.revision == revision)

    async def _query_values(self, name: str, query: str, canary: str, stable: str,
                            interval_s: float) -> tuple[float | None, float | None]:
        """One extra check's value for the canary and for the stable revision (several series are summed; no
        series, or a query that fails, is None: that check is inconclusive)."""
        if self.query is None:
            return None, None
        at = self.controller.clock.wall()
        values: list[float | None] = []
        for revision in (canary, stable):
            text = query_text(query, name, revision, interval_s)
            try:
                samples = await asyncio.to_thread(self.query, text, at)
            except Exception as exc:  # a bad query is the user's: say it once per rollout, judge without it
                if (name, query) not in self.query_errors:
                    self.query_errors.add((name, query))
                    self.controller.event(name, "CanaryQueryFailed", type(exc).__name__, f"{text}: {exc}"[:500])
                samples = []
            values.append(sum(v for _, v in samples) if samples else None)
        return values[0], values[1]

    # ------------------------------------------------------------ acting
    def apply(self, name: str, state: ServiceState, decision: ca.StepDecision, stable: str) -> None:
        """Make ``decision`` so: the weights, the counts, the revision; save it; say it."""
        controller = self.controller
        assert state.canary is not None
        before = int(state.canary["state"].get("weight", 0))
        canary_revision = state.revision
        by_hand = decision.reason.startswith(("promoted by hand", "aborted by hand", "paused by hand"))
        source = "analysis"
        if by_hand:
            source = "remediation" if "remediation:" in decision.reason else "by hand"
        state.canary = {"stable": stable, "state": decision.state.to_dict()}
        if decision.action == "promote":
            state.canary = None
            # the split follows the ready replicas while the stable set drains: a promotion at 10 % does not
            # send everything to the canary's one replica
            self._weights(name, None)
            controller.event(name, "CanaryPromoted", source,
                             f"{canary_revision} replaces {stable}: {decision.reason}")
        elif decision.action == "abort":
            state.canary = None
            # back to the stable revision (its own spec): the reconciler drains the canary replicas
            state.spec = controller.revision_spec(name, stable) or state.spec
            state.revision, state.previous_revision = stable, ""
            self.settling[name] = (stable, canary_revision)
            self._weights(name, {stable: 100.0, canary_revision: 0.0})
            message = f"{canary_revision} rolled back to {stable}: {decision.reason}"
            controller.event(name, "CanaryAborted", source, message)
            if self.announce is not None:  # a notification with the numbers that failed
                self.announce("LichenCanaryAborted", {"service": name, "severity": "warning"},
                              {"summary": f"the canary of {name} was rolled back", "description": message})
        elif decision.action == "advance":
            self._set_weights(name, state)
            controller.event(name, "CanaryStep", "analysis passed", f"weight {before}% → {decision.weight}%: "
                                                                    f"{decision.reason}")
        elif decision.action == "pause":
            controller.event(name, "CanaryPaused", source if by_hand else "inconclusive",
                             decision.reason)
        elif decision.action == "extend" and "resumed" in decision.reason:
            controller.event(name, "CanaryResumed", "by hand", decision.reason)
        if decision.action in ("promote", "abort"):
            self.baselines.pop(name, None)
            self.last_stable.pop(name, None)
        controller.save_desired(name)
        controller.wake()

    def _set_weights(self, name: str, state: ServiceState) -> bool:
        """The gateway's split for a running canary: its step's weight in proportion to the step's replicas that
        are ready (so its share never runs ahead of its capacity); True once they all are."""
        assert state.canary is not None
        weight = float(state.canary["state"].get("weight", 0))
        wanted, ready = canary_plan_replicas(state), self._ready_count(name, state.revision)
        share = ca.applied_share(weight, ready, wanted)
        self._weights(name, {state.canary["stable"]: 100.0 - share, state.revision: share})
        return ready >= wanted

    def _weights(self, name: str, weights: dict[str, float] | None) -> None:
        gateway = self.controller.gateway
        if gateway is not None and (name not in self.applied or self.applied[name] != weights):
            self.applied[name] = weights
            gateway.set_revision_weights(name, weights)
            self.controller.wake()

    def _settle(self, name: str) -> None:
        """After a promotion or abort: clear the fixed split once the leaving revision has no replica left."""
        kept, leaving = self.settling[name]
        state = self.controller.services.get(name)
        if state is None or state.canary is not None:
            self.settling.pop(name)
            return
        if not any(e.revision == leaving for e in self.controller.endpoints.endpoints(name)):
            self.settling.pop(name)
            self._weights(name, None)

    async def aclose(self) -> None:
        """Close the revision reader's HTTP client (at shutdown)."""
        close = getattr(self.reader, "aclose", None)
        if close is not None:
            await close()

    # ------------------------------------------------------------ by hand (the control API)
    def act(self, name: str, action: str, reason: str = "") -> dict[str, Any]:
        """``lichen rollout promote|abort|pause|resume``: the pure manual decisions, applied."""
        state = self.controller.services.get(name)
        if state is None:
            known = ", ".join(sorted(self.controller.services)) or "none"
            raise UnknownServiceError(f"no service named {name!r} (services: {known})")
        if state.canary is None:
            raise ConfigError(f"{name} has no canary rollout in progress (revision {state.revision}); "
                              "'lichen rollout status' shows its history")
        now = self.controller.clock.now()
        canary = ca.CanaryState.from_dict(state.canary["state"])
        stable = state.canary["stable"]
        moves = {"promote": lambda: ca.promote(canary, now),
                 "abort": lambda: ca.abort(canary, reason or "aborted by hand", now),
                 "pause": lambda: ca.pause(canary, now),
                 "resume": lambda: ca.resume(canary, now)}
        decision = moves[action]()
        self.apply(name, state, decision, stable)
        return {"service": name, "action": decision.action, "reason": decision.reason, **self.status(name)}

    def status(self, name: str) -> dict[str, Any]:
        """``lichen rollout status``: the step, the weights, the last analysis and the history."""
        state = self.controller.services.get(name)
        if state is None:
            raise UnknownServiceError(f"no service named {name!r}")
        entry: dict[str, Any] = {"service": name, "revision": state.revision, "strategy": state.spec.rollout.strategy,
                                 "steps": list(state.spec.rollout.steps), "last_analysis": self.last.get(name)}
        if state.canary is None:
            entry.update({"canary": None, "phase": "settling" if name in self.settling else "stable"})
            return entry
        canary = state.canary["state"]
        weight = float(canary.get("weight", 0))
        offset = self.controller.clock.wall() - self.controller.clock.now()
        entry.update({
            "phase": "paused" if canary.get("paused") else "progressing", "stable": state.canary["stable"],
            "canary": state.revision, "weight": weight, "step": int(canary.get("step_index", 0)) + 1,
            "weights": {state.canary["stable"]: 100.0 - weight, state.revision: weight},
            "canary_replicas": canary_plan_replicas(state), "pause_reason": canary.get("pause_reason") or None,
            "history": [{**h, "at": h["at"] + offset} for h in canary.get("history", [])],  # wall seconds
        })
        return entry


def attach_canaries(controller: CanaryController, reader: RevisionReader | None = None,
                    tick_s: float = 1.0, query: QueryFunction | None = None) -> Canaries:
    """Run canary rollouts as one of the controller's periodic tasks (each service is judged every
    ``analysis.interval_s``; the tick only looks). ``query`` evaluates ``analysis.queries``."""
    canaries = Canaries(controller, reader, query)
    controller.add_periodic("canaries", tick_s, canaries.tick)
    return canaries

