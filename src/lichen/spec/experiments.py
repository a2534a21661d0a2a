"""Chaos experiment files (``lichen chaos APP EXPERIMENT.yaml``): the load, the faults and the hypotheses.

An experiment is checked as a whole before anything is injected: an unknown
fault kind or key, a service or alert receiver the app does not have, a
dependency port that cannot be paused (``check_port``), or a hypothesis that
cannot be evaluated is a located error (``file:line:column field: message``),
through the same machinery as ``lichen.yaml``.

Example::

    name: replica-kill-under-load
    load: {route: /web/whoami, rate: 100}
    duration: 30s
    faults:
      - {kind: kill_replica, service: web, at: 10s}
      - {kind: pause_replica, service: web, at: 18s, for_s: 5s}
      - {kind: receiver_down, receiver: pager, at: 20s, for_s: 60s}
    hypotheses:
      - p99 < 200ms
      - errors < 0.1%
      - recovered within 5s
      - no notification lost
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from lichen.errors import ConfigError, SpecError, SpecIssue
from lichen.spec.bases import Name, SpecModel
from lichen.spec.documents import parse_document
from lichen.spec.models import AppSpec
from lichen.spec.quantities import Duration

HYPOTHESIS_FORMS = ("p50|p90|p99|p99.9|max|mean < N ms", "errors < N%", "failed requests == 0",
                    "recovered within N s", "detected within N s", "no orphaned processes",
                    "no notification lost", "notifications lost == 0")
_LATENCY = re.compile(r"^(p50|p90|p99|p99\.9|max|mean)\s*(<=|<)\s*([0-9.]+)\s*(ms|s)$")
_ERRORS = re.compile(r"^errors\s*(<=|<)\s*([0-9.]+)\s*%$")
_FAILED = re.compile(r"^failed(?: requests)?\s*(==|<=|<)\s*([0-9]+)$")
_WITHIN = re.compile(r"^(recovered|detected) within\s*([0-9.]+)\s*(ms|s)$")
_LOST = re.compile(r"^notifications? lost\s*(==|<=|<)\s*([0-9]+)$")


@dataclass(frozen=True)
class Hypothesis:
    """One claim to check: ``measure`` (p99, errors, failed, recovered, detected, orphans) ``op`` ``limit``
    (seconds, a ratio or a count)."""

    text: str
    measure: str
    op: str
    limit: float


def parse_hypothesis(text: str) -> Hypothesis:
    """A hypothesis from its text, or ValueError listing the forms that can be evaluated."""
    body = " ".join(str(text).strip().lower().split())
    if match := _LATENCY.match(body):
        scale = 0.001 if match.group(4) == "ms" else 1.0
        return Hypothesis(text, match.group(1), match.group(2), float(match.group(3)) * scale)
    if match := _ERRORS.match(body):
        return Hypothesis(text, "errors", match.group(1), float(match.group(2)) / 100)
    if match := _FAILED.match(body):
        return Hypothesis(text, "failed", match.group(1), float(match.group(2)))
    if match := _WITHIN.match(body):
        scale = 0.001 if match.group(3) == "ms" else 1.0
        return Hypothesis(text, match.group(1), "<=", float(match.group(2)) * scale)
    if body in ("no orphaned processes", "no orphans"):
        return Hypothesis(text, "orphans", "==", 0.0)
    if body in ("no notification lost", "no notifications lost"):
        return Hypothesis(text, "notifications_lost", "==", 0.0)
    if match := _LOST.match(body):
        return Hypothesis(text, "notifications_lost", match.group(1), float(match.group(2)))
    raise ValueError(f"cannot evaluate {text!r}; a hypothesis reads like one of: {'; '.join(HYPOTHESIS_FORMS)}")


FaultKind = Literal["kill_replica", "pause_replica", "kill_gateway", "kill_controller", "latency", "errors", "reset",
                    "rolling_restart", "receiver_down", "pause_dependency", "bandwidth", "slow_disk", "full_disk"]
FAULT_KINDS: tuple[str, ...] = ("kill_replica", "pause_replica", "kill_gateway", "kill_controller", "latency", "errors",
                                "reset", "bandwidth", "rolling_restart", "receiver_down", "pause_dependency",
                                "slow_disk", "full_disk")
NOT_BUILT: dict[str, str] = {}
"""fault kinds designed but not built yet: refused by name, not as unknown (none at present)"""
DISK_FAULTS = frozenset({"slow_disk", "full_disk"})
"""a slow or full disk under the controller's state store, simulated in its write path"""
TRAFFIC_FAULTS = frozenset({"latency", "errors", "reset", "bandwidth"})
"""faults in a service's traffic, injected by the gateway (no process is harmed)"""
UNDETECTED = frozenset({*TRAFFIC_FAULTS, *DISK_FAULTS, "rolling_restart", "receiver_down", "pause_dependency"})
"""what no probe is meant to notice: traffic faults, a planned rolling restart (``lichen restart``), an alert
receiver down (the notifier's outbox retries it), a dependency Lichen does not run (Redis), the state store's
disk (the controller logs it and retries)"""
NEEDS_SERVICE = frozenset({"kill_replica", "pause_replica", "rolling_restart", *TRAFFIC_FAULTS})
LASTS = frozenset({"pause_replica", "receiver_down", "pause_dependency", *TRAFFIC_FAULTS, *DISK_FAULTS})


class LoadSpec(SpecModel):
    """The open-loop load that runs through the whole experiment (``lichen loadtest``'s options)."""

    route: Annotated[str, Field(pattern=r"^/[^\s]*$")] | None = None
    routes: list[Annotated[str, Field(pattern=r"^/[^\s]*$")]] = Field(default_factory=list)
    rate: Annotated[float, Field(gt=0, le=100_000)] = 50.0
    method: Literal["GET", "POST", "PUT", "DELETE", "HEAD"] = "GET"
    timeout_s: Duration = 10.0

    def paths(self) -> list[str]:
        return [*([self.route] if self.route else []), *self.routes] or ["/"]


class FaultSpec(SpecModel):
    kind: FaultKind
    at: Duration
    """when to inject it, from the start of the load"""
    service: Name | None = None
    count: Annotated[int, Field(ge=1)] | None = None
    percent: Annotated[float, Field(gt=0, le=100)] | None = None
    """kill_replica, pause_replica: the share of ready replicas hit; latency, errors, reset: of requests (100)"""
    for_s: Duration | None = None
    """pause_replica: how long the replica stays stopped; a traffic fault: how long it lasts"""
    delay_ms: Annotated[float, Field(gt=0, le=600_000)] | None = None
    """latency: added to each request it hits; slow_disk: to each write of the state store"""
    status: Annotated[int, Field(ge=400, le=599)] | None = None
    """errors: the status answered instead of the service (503)"""
    rate_kbps: Annotated[float, Field(gt=0, le=100_000_000)] | None = None
    """bandwidth: the most the service's answers, together, go to clients at (kilobits per second)"""
    receiver: Name | None = None
    """receiver_down: the alert receiver (``observability.receivers``, by name) whose deliveries fail"""
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    """pause_dependency: the TCP port on this machine that the dependency (Redis: 6379) listens on"""

    @field_validator("kind", mode="before")
    @classmethod
    def _kind_built(cls, kind: object) -> object:
        if isinstance(kind, str) and kind in NOT_BUILT:
            raise ValueError(f"{kind} ({NOT_BUILT[kind]}) is not built yet; built kinds: {', '.join(FAULT_KINDS)}")
        return kind

    @model_validator(mode="after")
    def _fits_kind(self) -> FaultSpec:
        if (self.kind == "receiver_down") != (self.receiver is not None):
            raise ValueError("receiver: required for receiver_down (a name from observability.receivers)"
                             if self.kind == "receiver_down" else
                             f"receiver: only receiver_down takes it, not {self.kind}")
        if (self.kind == "pause_dependency") != (self.port is not None):
            raise ValueError("port: required for pause_dependency (the TCP port the dependency listens on, e.g. 6379)"
                             if self.kind == "pause_dependency" else
                             f"port: only pause_dependency takes it, not {self.kind}")
        if self.kind in NEEDS_SERVICE and self.service is None:
            raise ValueError(f"service: required for {self.kind}")
        if self.kind not in NEEDS_SERVICE and (self.service or self.count or self.percent):
            raise ValueError(f"{self.kind} takes no service, count or percent")
        if self.kind == "rolling_restart" and (self.count or self.percent):
            raise ValueError("rolling_restart takes no count or percent: it replaces every replica, as the "
                             "service's rollout settings say")
        if self.count is not None and (self.percent is not None or self.kind in TRAFFIC_FAULTS):
            raise ValueError("count: give count or percent, not both; a traffic fault takes percent only")
        if self.kind in LASTS and self.for_s is None:
            raise ValueError(f"for_s: required for {self.kind} (how long it lasts, e.g. 5s)")
        if self.kind not in LASTS and self.for_s is not None:
            raise ValueError(f"for_s: {self.kind} happens once; only pause_replica, pause_dependency, receiver_down, "
                             "disk and traffic faults last")
        if self.kind in ("latency", "slow_disk") and self.delay_ms is None:
            raise ValueError(f"delay_ms: required for {self.kind} (what to add to each "
                             f"{'request' if self.kind == 'latency' else 'write of the state store'}, e.g. 200)")
        if self.kind == "slow_disk" and (self.delay_ms or 0) > 10_000:
            raise ValueError("delay_ms: at most 10000 for slow_disk: each write holds the controller's loop that long")
        if self.kind not in ("latency", "slow_disk") and self.delay_ms is not None:
            raise ValueError(f"delay_ms: only latency and slow_disk take it, not {self.kind}")
        if (self.kind == "bandwidth") != (self.rate_kbps is not None):
            raise ValueError("rate_kbps: required for bandwidth (kilobits per second, e.g. 512)"
                             if self.kind == "bandwidth" else f"rate_kbps: only bandwidth takes it, not {self.kind}")
        if self.kind != "errors" and self.status is not None:
            raise ValueError(f"status: only errors takes it, not {self.kind}")
        return self


class ExperimentSpec(SpecModel):
    name: Annotated[str, Field(min_length=1, max_length=100)]
    load: LoadSpec = Field(default_factory=LoadSpec)
    duration: Duration | None = None
    """how long the load runs (default: the last fault, plus its pause, plus 15 s to recover)"""
    faults: Annotated[list[FaultSpec], Field(min_length=1)]
    hypotheses: list[str] = Field(default_factory=list)

    @field_validator("hypotheses")
    @classmethod
    def _hypotheses_parse(cls, hypotheses: list[str]) -> list[str]:
        for text in hypotheses:
            parse_hypothesis(text)  # a ValueError names what is wrong with it
        return hypotheses

    def run_s(self) -> float:
        last = max(f.at + (f.for_s or 0.0) for f in self.faults)
        return self.duration if self.duration is not None else last + 15.0

    def parsed_hypotheses(self) -> list[Hypothesis]:
        return [parse_hypothesis(text) for text in self.hypotheses]


def receiver_names(app: AppSpec) -> list[str]:
    """The names of the app's alert receivers, as the notifier names them
    (:func:`lichen.observe.notifications.receiver_name`): ``name``, else ``KIND-INDEX``."""
    return [r.name or f"{'webhook' if r.webhook else 'alertmanager' if r.alertmanager else 'log'}-{i}"
            for i, r in enumerate(app.observability.receivers)]


def load_experiment(path: str | Path, app: AppSpec,
                    check_port: Callable[[int], str | None] | None = None) -> ExperimentSpec:
    """Read and check an experiment against the app it runs on; every problem is one located issue.
    ``check_port(port)``: what is wrong with pausing the process that listens there (None: nothing)."""
    from lichen.spec.loading import schema_issues

    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("no such experiment file", where=str(source)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read it: {exc}", where=str(source)) from None
    doc, issues = parse_document(text, str(source))
    if doc is None:
        raise SpecError(issues)
    if not isinstance(doc.data, dict):
        raise SpecError([doc.issue((), "expected a mapping with name, load, faults and hypotheses")])
    try:
        experiment = ExperimentSpec.model_validate(doc.data)
    except ValidationError as exc:
        raise SpecError(schema_issues(doc, exc, root=ExperimentSpec)) from None
    problems: list[SpecIssue] = []
    for index, fault in enumerate(experiment.faults):
        if fault.service is not None and fault.service not in app.services:
            known = ", ".join(sorted(app.services)) or "none"
            problems.append(doc.issue(("faults", index, "service"),
                                      f"the app has no service {fault.service!r} (services: {known})"))
        if fault.receiver is not None and fault.receiver not in receiver_names(app):
            known = ", ".join(receiver_names(app)) or "none"
            problems.append(doc.issue(("faults", index, "receiver"),
                                      f"the app has no alert receiver {fault.receiver!r} (observability.receivers: "
                                      f"{known})"))
        if fault.port is not None and check_port is not None and (problem := check_port(fault.port)):
            problems.append(doc.issue(("faults", index, "port"), problem))
        if fault.at >= experiment.run_s():
            problems.append(doc.issue(("faults", index, "at"), f"at {fault.at:g} s is not within the run's "
                                                               f"{experiment.run_s():g} s"))
    for index, hypothesis in enumerate(experiment.parsed_hypotheses()):
        if hypothesis.measure == "notifications_lost" and not app.observability.receivers:
            problems.append(doc.issue(("hypotheses", index), f"cannot evaluate {hypothesis.text!r}: the app has no "
                                                             "observability.receivers, so it sends no notification"))
    if problems:
        raise SpecError(problems)
    return experiment
