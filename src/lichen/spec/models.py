"""The ``lichen.yaml`` schema: one pydantic model per section.

These models are the single source of truth for the spec; ``docs/spec.md``
documents every field and a test keeps the two in step. Models are plain
data: no I/O, no imports of other Lichen layers.

Defaults follow Kubernetes where a Kubernetes concept exists (readiness
thresholds, maxSurge/maxUnavailable 25 %, termination grace 30 s,
CrashLoopBackOff 10 s doubling to 300 s, reset after 10 min). Probes are
faster than Kubernetes' 10 s x 3: every second, and liveness fails after 2
misses of 0.5 s, so a hung replica is found in about two seconds (worst
case 2.5 s). The Kubernetes renderer always writes probe values
explicitly, so one spec means the same thing in both places.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

# The base and the gateway section live in their own modules; this one stays the schema's import point.
from lichen.spec.bases import (  # noqa: F401 - re-exported
    ENTRYPOINT_PATTERN,
    ENV_NAME_PATTERN,
    NAME_PATTERN,
    ROUTE_PREFIX_PATTERN,
    Entrypoint,
    EnvName,
    EnvValue,
    Name,
    Percent,
    SpecModel,
    _positive,
)
from lichen.spec.redactions import RedactFieldSpec, one_entry_per_field, redact_rules
from lichen.spec.gateways import (  # noqa: F401 - re-exported
    AdmissionSpec,
    AuthSpec,
    GatewaySpec,
    JwtSpec,
    LimitsSpec,
    OutlierSpec,
    RateLimitSpec,
    RetrySpec,
)
from lichen.spec.quantities import CpuCores, Duration, MemoryBytes, parse_cron
from lichen.spec.remediations import RemediationSpec
from lichen.spec.traces import TracingSpec

# ---------------------------------------------------------------- services


class ResourcesSpec(SpecModel):
    cpu: CpuCores | None = None
    memory: MemoryBytes | None = None
    gpu: Annotated[int, Field(ge=0)] = 0


class ProbeSpec(SpecModel):
    path: str = "/readyz"
    initial_delay_s: Duration = 0.0
    period_s: Duration = 1.0
    timeout_s: Duration = 1.0
    failure_threshold: Annotated[int, Field(ge=1)] = 3
    success_threshold: Annotated[int, Field(ge=1)] = 1

    @field_validator("period_s", "timeout_s")
    @classmethod
    def _period_positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be > 0")
        return value


def _liveness_default() -> ProbeSpec:
    return ProbeSpec(path="/healthz", period_s=1.0, timeout_s=0.5, failure_threshold=2)


def _readiness_default() -> ProbeSpec:
    return ProbeSpec(path="/readyz", period_s=1.0, timeout_s=1.0, failure_threshold=3)


class ProbesSpec(SpecModel):
    readiness: ProbeSpec = Field(default_factory=_readiness_default)
    liveness: ProbeSpec = Field(default_factory=_liveness_default)

    @model_validator(mode="before")
    @classmethod
    def _fill_paths(cls, data: object) -> object:
        # A partial probe block keeps the built-in path of its kind.
        if isinstance(data, dict):
            data = dict(data)
            for kind, path in (("readiness", "/readyz"), ("liveness", "/healthz")):
                block = data.get(kind)
                if isinstance(block, dict) and "path" not in block:
                    defaults = _liveness_default() if kind == "liveness" else _readiness_default()
                    data[kind] = {**defaults.model_dump(), **block, "path": path}
        return data


MAX_REPLICAS = 1000
"""the most replicas one service may ask for: far above what one machine or a sane Deployment runs, and below
what the state store and the process table can hold"""


class AutoscaleSpec(SpecModel):
    min: Annotated[int, Field(ge=0, le=MAX_REPLICAS)] = 1
    max: Annotated[int, Field(ge=1, le=MAX_REPLICAS)] = 4
    metric: Literal["inflight", "rps", "cpu", "latency_p95_ms"] = "inflight"
    target: Annotated[float, Field(gt=0)] = 4.0
    scale_up_stabilization_s: Duration = 0.0
    scale_down_stabilization_s: Duration = 0.0
    interval_s: Duration = 1.0
    # KPA's windows and rates (knative/serving config-autoscaler defaults); lichen.control.autoscaling reads them
    stable_window_s: Duration = 60.0
    panic_window_s: Duration = 6.0
    panic_threshold: Annotated[float, Field(ge=1)] = 2.0
    max_scale_up_rate: Annotated[float, Field(gt=1)] = 10.0
    max_scale_down_rate: Annotated[float, Field(gt=1)] = 2.0
    tolerance: Annotated[float, Field(ge=0, lt=1)] = 0.1
    # scale to zero (min: 0): the idle time before it (Knative's scale-to-zero-grace-period) and the
    # gateway's activator queue that holds requests while a replica starts
    scale_to_zero_after_s: Duration = 30.0
    activation_queue: Annotated[int, Field(ge=1)] = 100
    activation_timeout_s: Duration = 30.0

    _intervals_positive = field_validator("interval_s", "stable_window_s", "panic_window_s", "scale_to_zero_after_s",
                                          "activation_timeout_s")(_positive)

    @model_validator(mode="after")
    def _min_le_max(self) -> AutoscaleSpec:
        if self.max < self.min:
            raise ValueError(f"max: must be >= min ({self.min})")
        if self.panic_window_s > self.stable_window_s:
            raise ValueError(f"panic_window_s: must be <= stable_window_s ({self.stable_window_s:g})")
        return self


class QuerySpec(SpecModel):
    """One extra canary check: a PromQL query evaluated for the canary and for the stable revision."""

    name: Name
    query: Annotated[str, Field(min_length=1)]  # PromQL; the shell replaces `$revision` and `$service`
    max_ratio: Annotated[float, Field(gt=0)] | None = None  # fail when canary / stable exceeds it
    max_value: float | None = None  # fail when the canary's value exceeds it

    @model_validator(mode="after")
    def _a_bound(self) -> QuerySpec:
        if self.max_ratio is None and self.max_value is None:
            raise ValueError("max_ratio: a query needs max_ratio, max_value or both")
        return self


class AnalysisSpec(SpecModel):
    max_error_ratio: Annotated[float, Field(ge=0, le=1)] = 0.01
    max_p95_ms: Annotated[float, Field(gt=0)] | None = None
    interval_s: Duration = 10.0
    min_requests: Annotated[int, Field(ge=0)] = 20
    failure_limit: Annotated[int, Field(ge=1)] = 1
    # one-sided tests of canary vs stable at this confidence (Kayenta's Mann-Whitney default, 98 %)
    confidence: Annotated[float, Field(gt=0.5, lt=1)] = 0.98
    # a significantly slower canary fails only when its p95 is also this much above stable's
    latency_margin_ms: Annotated[float, Field(ge=0)] = 25.0
    # inconclusive analyses (too little traffic, a query without a value) tolerated in one step
    max_inconclusive: Annotated[int, Field(ge=1)] = 6
    # then: pause the rollout for a person to decide, or roll back
    on_inconclusive: Literal["pause", "fail"] = "pause"
    # extra checks, each a PromQL query with a ratio and/or absolute bound
    queries: list[QuerySpec] = Field(default_factory=list)

    _intervals_positive = field_validator("interval_s")(_positive)

    @field_validator("queries")
    @classmethod
    def _unique_query_names(cls, queries: list[QuerySpec]) -> list[QuerySpec]:
        names = [q.name for q in queries]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"query names must be unique; {', '.join(map(repr, twice))} appears twice")
        return queries


class RolloutSpec(SpecModel):
    strategy: Literal["rolling", "canary"] = "rolling"
    max_surge: Annotated[int, Field(ge=0)] | Percent = "25%"
    max_unavailable: Annotated[int, Field(ge=0)] | Percent = "25%"
    progress_deadline_s: Duration = 600.0
    auto_rollback: bool = True
    """a rolling update whose new revision crash-loops or misses progress_deadline_s goes back to the previous one"""
    steps: list[Annotated[int, Field(ge=1, le=100)]] = Field(default_factory=lambda: [10, 50, 100])
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)

    @field_validator("steps")
    @classmethod
    def _steps_increase(cls, steps: list[int]) -> list[int]:
        if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
            raise ValueError("steps must strictly increase")
        if steps and steps[-1] != 100:
            raise ValueError("the last step must be 100")
        return steps

    @model_validator(mode="after")
    def _surge_or_unavailable(self) -> RolloutSpec:
        if self.max_surge in (0, "0%") and self.max_unavailable in (0, "0%"):
            raise ValueError("max_surge and max_unavailable cannot both be 0")
        if isinstance(self.max_unavailable, str) and int(self.max_unavailable[:-1]) > 100:
            raise ValueError(f"max_unavailable: must be at most 100%, got {self.max_unavailable!r}")
        if self.strategy == "canary" and not self.steps:
            raise ValueError("steps: a canary needs at least one step, e.g. [10, 50, 100]")
        return self


class RestartSpec(SpecModel):
    """CrashLoopBackOff schedule: immediate first restart, then doubling."""

    initial_backoff_s: Duration = 10.0
    max_backoff_s: Duration = 300.0
    reset_after_s: Duration = 600.0

    @model_validator(mode="after")
    def _order(self) -> RestartSpec:
        if self.max_backoff_s < self.initial_backoff_s:
            raise ValueError(f"max_backoff_s: must be >= initial_backoff_s ({self.initial_backoff_s})")
        return self


class RouteSpec(SpecModel):
    prefix: Annotated[str, Field(pattern=ROUTE_PREFIX_PATTERN)]
    host: str | None = None
    headers: dict[str, EnvValue] = Field(default_factory=dict)  # `x-version: 2` is the text "2"
    strip_prefix: bool = False
    timeout_s: Duration | None = None

    @field_validator("timeout_s")
    @classmethod
    def _timeout_positive(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise ValueError("must be > 0 (every request would time out at once)")
        return value


class SloSpec(SpecModel):
    """Service level objectives feeding the default burn-rate alerts."""

    availability: Annotated[float, Field(gt=0, lt=1)] = 0.999
    latency_ms: Annotated[float, Field(gt=0)] = 300.0
    latency_target: Annotated[float, Field(gt=0, lt=1)] = 0.99


class ServiceSpec(SpecModel):
    entrypoint: Entrypoint
    replicas: Annotated[int, Field(ge=0, le=MAX_REPLICAS)] = 1
    autoscale: AutoscaleSpec | None = None
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    env: dict[EnvName, EnvValue] = Field(default_factory=dict)
    secrets: list[EnvName] = Field(default_factory=list)
    routes: list[RouteSpec] = Field(default_factory=list)
    timeout_s: Duration = 30.0
    max_concurrency: Annotated[int, Field(ge=1)] = 64
    max_inflight: Annotated[int, Field(ge=1)] | None = None
    probes: ProbesSpec = Field(default_factory=ProbesSpec)
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)
    restart: RestartSpec = Field(default_factory=RestartSpec)
    termination_grace_s: Duration = 30.0
    slo: SloSpec = Field(default_factory=SloSpec)
    metrics_path: Annotated[str, Field(pattern=ROUTE_PREFIX_PATTERN)] = "/metrics"
    image: str | None = None
    depends_on: list[Name] = Field(default_factory=list)
    """services whose desired replicas must be ready before this one's start (lichen.control.ordering)"""

    @field_validator("metrics_path")
    @classmethod
    def _metrics_path_free(cls, value: str) -> str:
        if value in ("/healthz", "/readyz", "/.well-known/lichen", "/openapi.json"):
            raise ValueError(f"{value} is another built-in endpoint of every replica; pick another path")
        return value

    @model_validator(mode="after")
    def _slo_latency_measurable(self) -> ServiceSpec:
        # Requests are cut at the timeout (504) and then count as fast, so an objective at or above the longest
        # timeout could never be missed: the histogram could not honour it. Only a threshold the user wrote is
        # refused (the 300 ms default is no mistake of a service whose timeout is shorter).
        if "latency_ms" not in self.slo.model_fields_set:
            return self
        bound_s = max([self.timeout_s, *(r.timeout_s for r in self.routes if r.timeout_s is not None)])
        if self.slo.latency_ms >= bound_s * 1000:
            raise ValueError(
                f"slo.latency_ms: must be below the longest timeout of this service ({bound_s:g} s = "
                f"{bound_s * 1000:g} ms, from timeout_s and routes[].timeout_s), got {self.slo.latency_ms:g}: a "
                "request is cut at the timeout and its 504 is counted as fast, so this objective could never be missed"
            )
        return self

    @field_validator("timeout_s")
    @classmethod
    def _timeout_positive(cls, value: float) -> float:
        # The replica refuses LICHEN_TIMEOUT_S=0, so a spec saying 0 could never run.
        if value <= 0:
            raise ValueError("must be > 0 (every request would time out at once)")
        return value

    @field_validator("routes", mode="before")
    @classmethod
    def _routes_from_strings(cls, routes: object) -> object:
        if isinstance(routes, list):
            return [{"prefix": r} if isinstance(r, str) else r for r in routes]
        return routes

    @model_validator(mode="after")
    def _replicas_or_autoscale(self) -> ServiceSpec:
        if self.autoscale is not None and "replicas" in self.model_fields_set:
            raise ValueError("autoscale: set either replicas or autoscale, not both")
        _autoscale_target_reachable(self)
        return self

    @field_validator("secrets")
    @classmethod
    def _unique_secrets(cls, secrets: list[str]) -> list[str]:
        dupes = sorted({s for s in secrets if secrets.count(s) > 1})
        if dupes:
            raise ValueError(f"duplicate secret names: {', '.join(dupes)}")
        return secrets

    @model_validator(mode="after")
    def _secrets_not_in_env(self) -> ServiceSpec:
        _secrets_apart_from_env(self)
        return self


def _autoscale_target_reachable(spec: ServiceSpec) -> None:
    """A target the service's metric can never show: a p95 at or past the timeout (a request is cut there), or
    more CPU per replica than its cgroup limit grants."""
    scale = spec.autoscale
    if scale is None:
        return
    bound_s = max([spec.timeout_s, *(r.timeout_s for r in spec.routes if r.timeout_s is not None)])
    if scale.metric == "latency_p95_ms" and scale.target >= bound_s * 1000:
        raise ValueError(f"autoscale.target: a p95 of {scale.target:g} ms can never be measured: requests are cut "
                         f"at the longest timeout of this service ({bound_s * 1000:g} ms); pick a lower target")
    if scale.metric == "cpu" and spec.resources.cpu is not None and scale.target > spec.resources.cpu:
        raise ValueError(f"autoscale.target: {scale.target:g} CPU cores per replica can never be reached: "
                         f"resources.cpu limits each replica to {spec.resources.cpu:g}")


def _secrets_apart_from_env(item: ServiceSpec | JobSpec) -> None:
    both = sorted(set(item.secrets) & set(item.env))
    if both:
        raise ValueError(f"secrets: {', '.join(both)} also set in env; a variable comes from one or the other")


# -------------------------------------------------------------------- jobs


class CarbonAwareSpec(SpecModel):
    deadline: Duration = 6 * 3600.0
    max_intensity_g_per_kwh: Annotated[float, Field(gt=0)] | None = None


class JobSpec(SpecModel):
    entrypoint: Entrypoint
    args: list[str] = Field(default_factory=list)
    depends_on: list[Name] = Field(default_factory=list)
    schedule: str | None = None
    env: dict[EnvName, EnvValue] = Field(default_factory=dict)
    secrets: list[EnvName] = Field(default_factory=list)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    timeout_s: Duration | None = None
    retries: Annotated[int, Field(ge=0)] = 0
    outputs: list[str] = Field(default_factory=list)
    carbon_aware: CarbonAwareSpec | None = None
    concurrency_policy: Literal["forbid", "allow", "replace"] = "forbid"
    starting_deadline_s: Duration | None = None
    successful_runs_kept: Annotated[int, Field(ge=0)] = 3
    failed_runs_kept: Annotated[int, Field(ge=0)] = 1

    @model_validator(mode="after")
    def _secrets_not_in_env(self) -> JobSpec:
        _secrets_apart_from_env(self)
        return self

    @field_validator("schedule")
    @classmethod
    def _cron(cls, schedule: str | None) -> str | None:
        if schedule is None:
            return None
        _, _, days, months, _ = parse_cron(schedule)
        weekdays_restricted = not schedule.split()[4].startswith("*")
        days_restricted = not schedule.split()[2].startswith("*")
        longest = {2: 29, 4: 30, 6: 30, 9: 30, 11: 30}
        if days_restricted and not weekdays_restricted and not any(
                day <= longest.get(month, 31) for month in months for day in days):
            raise ValueError(f"cron schedule {schedule!r} names no date that exists (day {min(days)} of "
                             f"month(s) {', '.join(str(m) for m in sorted(months))})")
        return schedule


# ----------------------------------------------------------- observability


class ReceiverSpec(SpecModel):
    name: Name | None = None
    webhook: Annotated[str, Field(pattern=r"^https?://")] | None = None
    alertmanager: Annotated[str, Field(pattern=r"^https?://")] | None = None
    log: bool = False

    @model_validator(mode="after")
    def _exactly_one(self) -> ReceiverSpec:
        chosen = [k for k in ("webhook", "alertmanager") if getattr(self, k)] + (["log"] if self.log else [])
        if len(chosen) != 1:
            raise ValueError("a receiver needs exactly one of webhook, alertmanager or log: true")
        return self


class NotificationRouteSpec(SpecModel):
    group_by: list[str] = Field(default_factory=lambda: ["alertname", "service"])
    group_wait_s: Duration = 30.0
    group_interval_s: Duration = 300.0
    repeat_interval_s: Duration = 4 * 3600.0


class InhibitRuleSpec(SpecModel):
    source_matchers: dict[str, str]
    target_matchers: dict[str, str]
    equal: list[str] = Field(default_factory=list)


class ObservabilitySpec(SpecModel):
    scrape_interval_s: Duration = 5.0
    scrape_timeout_s: Duration = 2.0
    evaluation_interval_s: Duration = 5.0
    retention: Duration = 6 * 3600.0
    persist_path: str | None = None
    rules: list[str] = Field(default_factory=list)
    default_rules: bool = True
    receivers: list[ReceiverSpec] = Field(default_factory=list)
    route: NotificationRouteSpec = Field(default_factory=NotificationRouteSpec)
    inhibit_rules: list[InhibitRuleSpec] = Field(default_factory=list)
    redact: list[RedactFieldSpec] = Field(default_factory=list)
    """fields hashed or dropped in every log line the SDK and the gateway write; Authorization, Cookie and
    X-Api-Key headers are always dropped"""
    tracing: TracingSpec | None = None

    _intervals_positive = field_validator("scrape_interval_s", "scrape_timeout_s", "evaluation_interval_s")(_positive)

    @model_validator(mode="after")
    def _timeout_within_interval(self) -> ObservabilitySpec:
        if self.scrape_timeout_s > self.scrape_interval_s:
            raise ValueError(f"scrape_timeout_s: must be <= scrape_interval_s ({self.scrape_interval_s})")
        return self

    _one_entry_per_field = field_validator("redact")(one_entry_per_field)

    def redact_rules(self) -> tuple[tuple[str, str, str], ...]:
        """``redact`` as ``(action, where, field)`` rules (:mod:`lichen.redacting`)."""
        return redact_rules(self.redact)


# ---------------------------------------------------------- sustainability


INTENSITY_PROVIDERS = ("electricitymaps", "watttime", "carbon-aware-sdk")


class IntensityApiSpec(SpecModel):
    """A live carbon-intensity API (docs/sustainability.md#carbon-intensity); credentials come from the
    controller's environment, named here, never written in the spec."""

    provider: Literal["electricitymaps", "watttime", "carbon-aware-sdk"]
    url: Annotated[str, Field(pattern=r"^https?://[^\s/]+")] | None = None
    """the API's base URL; unset: the provider's public one (the Carbon Aware SDK has none: required)"""
    zone: str | None = None
    """the provider's zone, region or location; unset: ``sustainability.region``"""
    token_env: EnvName | None = None
    """Electricity Maps: the variable holding the API token"""
    username_env: EnvName | None = None
    password_env: EnvName | None = None
    refresh_s: Annotated[float, Field(ge=60, le=86400)] = 300.0
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0

    @model_validator(mode="after")
    def _credentials(self) -> IntensityApiSpec:
        if self.provider == "electricitymaps" and not self.token_env:
            raise ValueError("token_env: required for electricitymaps (the variable that holds the API token)")
        if self.provider == "watttime" and not (self.username_env and self.password_env):
            raise ValueError("username_env and password_env: required for watttime")
        if self.provider == "carbon-aware-sdk" and not self.url:
            raise ValueError("url: required for carbon-aware-sdk (the WebAPI you run)")
        return self


class SustainabilitySpec(SpecModel):
    enabled: bool = True
    region: str = "WORLD"
    pue: Annotated[float, Field(ge=1.0, le=3.0)] = 1.2
    carbon_intensity_g_per_kwh: Annotated[float, Field(ge=0)] | None = None
    intensity_trace: str | None = None
    """a CSV of carbon intensity over time, relative to the app folder"""
    intensity_api: IntensityApiSpec | None = None
    cpu_tdp_w: Annotated[float, Field(gt=0)] | None = None
    gpu_tdp_w: Annotated[float, Field(gt=0)] | None = None
    embodied_kg_co2e: Annotated[float, Field(ge=0)] | None = None
    """the machine's embodied emissions (the SCI's M), amortised over ``lifespan_years``"""
    lifespan_years: Annotated[float, Field(gt=0, le=30)] = 4.0
    sample_interval_s: Annotated[float, Field(ge=1, le=300)] = 5.0

    def secret_names(self) -> frozenset[str]:
        api = self.intensity_api
        if api is None:
            return frozenset()
        return frozenset(n for n in (api.token_env, api.username_env, api.password_env) if n)


# ------------------------------------------------------------------- state


class StateSpec(SpecModel):
    url: Annotated[str, Field(pattern=r"^sqlite:///.+")] = "sqlite:///.lichen/state.db"


PORT_RANGE_PATTERN = r"^\d{1,5}-\d{1,5}$"


class ControlSpec(SpecModel):
    """Where the control API (and the dashboard on it) listens; ``port`` unset: the port of the app's last run."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] | None = None


def port_range(text: str) -> tuple[int, int]:
    """``"20000-20999"`` -> ``(20000, 20999)``."""
    first, last = (int(part) for part in text.split("-"))
    return first, last


class KubernetesSpec(SpecModel):
    """Read by ``lichen build``, ``lichen render`` and ``lichen deploy`` only (docs/kubernetes.md)."""

    namespace: Name = "default"
    image_registry: str | None = None
    ingress_host: str | None = None
    base_image: Annotated[str, Field(min_length=1)] = "docker.io/library/python:3.11-slim"
    """the image ``lichen build`` starts from (Python 3.11 or newer with venv and pip)"""


# --------------------------------------------------------------------- app


class AppSpec(SpecModel):
    """The whole ``lichen.yaml``. An empty section (``jobs:`` with nothing under it) means its defaults.

    Top-level keys that start with ``x-`` are extension fields, ignored as in
    Docker Compose: a place for YAML anchors shared by several services.
    """

    app: Name
    services: dict[Name, ServiceSpec] = Field(default_factory=dict)
    jobs: dict[Name, JobSpec] = Field(default_factory=dict)
    gateway: GatewaySpec = Field(default_factory=GatewaySpec)
    observability: ObservabilitySpec = Field(default_factory=ObservabilitySpec)
    sustainability: SustainabilitySpec = Field(default_factory=SustainabilitySpec)
    state: StateSpec = Field(default_factory=StateSpec)
    kubernetes: KubernetesSpec = Field(default_factory=KubernetesSpec)
    control: ControlSpec = Field(default_factory=ControlSpec)
    remediation: RemediationSpec = Field(default_factory=RemediationSpec)
    replica_ports: Annotated[str, Field(pattern=PORT_RANGE_PATTERN)] | None = None
    """``FIRST-LAST``: every replica listens on a port of this range (lichen.runtime.ports)"""

    @field_validator("replica_ports")
    @classmethod
    def _port_range_order(cls, value: str | None) -> str | None:
        if value is not None:
            first, last = port_range(value)
            if not 1 <= first <= last <= 65535:
                raise ValueError(f"expected FIRST-LAST with 1 <= FIRST <= LAST <= 65535, got {value!r}")
        return value

    @model_validator(mode="after")
    def _replica_ports_apart(self) -> AppSpec:
        if self.replica_ports is not None:
            first, last = port_range(self.replica_ports)
            for field, port in (("gateway.port", self.gateway.port), ("control.port", self.control.port)):
                if port is not None and first <= port <= last:
                    raise ValueError(f"replica_ports: {self.replica_ports} contains {field} ({port}); "
                                     "a replica could not listen there")
        return self

    @model_validator(mode="before")
    @classmethod
    def _empty_sections_are_defaults(cls, data: object) -> object:
        if isinstance(data, dict):
            return {
                k: v
                for k, v in data.items()
                if not (v is None and k != "app" and k in cls.model_fields)
                and not (isinstance(k, str) and k.startswith("x-"))
            }
        return data

    def secret_names(self) -> frozenset[str]:
        """Every secret the app declares (services, jobs, the gateway's JWT key).

        Processes Lichen starts inherit its environment minus these names, then
        get only the secrets they declare, as in a Kubernetes pod.
        """
        names: set[str] = set()
        for owner in (*self.services.values(), *self.jobs.values()):
            names.update(owner.secrets)
        jwt = self.gateway.auth.jwt
        if jwt is not None and jwt.secret_env:
            names.add(jwt.secret_env)
        names.update(self.sustainability.secret_names())
        return frozenset(names)


def canonical_json(model: BaseModel) -> str:
    """A stable JSON text of a model (sorted keys, no spaces): equal specs give equal text."""
    return json.dumps(model.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def spec_revision(model: BaseModel) -> str:
    """A short content hash of a spec or one of its sections, for change detection and revisions."""
    return hashlib.sha256(canonical_json(model).encode()).hexdigest()[:12]
