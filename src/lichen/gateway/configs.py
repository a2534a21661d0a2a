"""The gateway's config file: what it listens on, its routes, and each service's upstream endpoints.

``lichen up`` renders it from the spec and the endpoint registry with
:func:`render_config` and writes it atomically with :func:`write_config`; the
gateway watches the file and applies changes live. Standalone (for example a
Kubernetes Deployment routing to Services) the file is written by hand. JSON
and YAML are both accepted.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lichen.errors import ConfigError
from lichen.redacting import Redaction, load_redaction, parse_rules, rules_text
from lichen.spec.models import AppSpec, GatewaySpec, RouteSpec, ServiceSpec, TracingSpec
from lichen.spec.quantities import Duration
from lichen.spec.documents import LocatingSafeLoader


class ConfigModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Endpoint(ConfigModel):
    """One upstream replica: where it listens, which replica and revision it is, and whether it is ready."""

    url: Annotated[str, Field(pattern=r"^http://[^/]+$")]
    replica: str = ""
    revision: str = "default"
    ready: bool = True

    @property
    def host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        return parts.hostname or "127.0.0.1", parts.port or 80

    @property
    def id(self) -> str:
        return self.replica or self.url


class ActivationConfig(ConfigModel):
    """Hold requests while the service has no ready replica (it is scaled to zero), and ask for one."""

    queue: Annotated[int, Field(ge=1)] = 100
    """the most requests held at once; one more is answered 503 with Retry-After"""
    timeout_s: Duration = 30.0
    """the longest a request is held (never past its route timeout), then 503 with Retry-After"""


class ControllerLink(ConfigModel):
    """Where the gateway asks for a replica of a service at zero: the controller's ``controller.json`` (its
    ``url``) and its bearer token file, both read at each ask (a restarted controller may move)."""

    info_file: str
    token_file: str


class FaultConfig(ConfigModel):
    """A fault in one service's traffic (:mod:`lichen.control.traffic_faults`), set by ``lichen chaos``."""

    kind: Literal["latency", "errors", "reset", "bandwidth"]
    percent: Annotated[float, Field(gt=0, le=100)] = 100.0
    delay_ms: Annotated[float, Field(ge=0, le=600_000)] = 0.0
    status: Annotated[int, Field(ge=400, le=599)] = 503
    rate_kbps: Annotated[float, Field(ge=0, le=100_000_000)] = 0.0
    """bandwidth: the service's answers go to clients at no more than this many kilobits per second, together"""
    until_wall: float
    """wall-clock seconds after which it no longer applies"""


class ServiceConfig(ConfigModel):
    endpoints: list[Endpoint] = Field(default_factory=list)
    faults: list[FaultConfig] = Field(default_factory=list)
    """traffic faults injected by ``lichen chaos`` (empty: the request path checks nothing more)"""
    activation: ActivationConfig | None = None
    """set for a service that may scale to zero (``autoscale.min: 0``); None: no ready replica is a 503"""
    revision_weights: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)
    max_inflight: Annotated[int, Field(ge=1)] | None = None
    idempotent_paths: list[str] = Field(default_factory=list)
    timeout_s: Duration = 30.0
    discover_idempotent: bool = True


class RouteConfig(RouteSpec):
    """A :class:`lichen.spec.models.RouteSpec` plus the service it sends to."""

    service: str


class GatewayConfig(ConfigModel):
    generation: str = ""
    """an opaque version the writer chooses; ``GET /-/config`` answers the one being served"""
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    internal_port: Annotated[int, Field(ge=0, le=65535)] | None = None
    """a plaintext listener on 127.0.0.1 beside a TLS ``port``, for this machine's own callers (``lichen up``
    sets it: the controller's probes and scrapes, replicas calling each other); 0 picks a free port"""
    settings: GatewaySpec = Field(default_factory=GatewaySpec)
    routes: list[RouteConfig] = Field(default_factory=list)
    services: dict[str, ServiceConfig] = Field(default_factory=dict)
    keys_db: str = ".lichen/keys.db"
    metrics_path: str = "/metrics"
    header_timeout_s: Duration = 10.0
    idle_timeout_s: Duration = 75.0
    reload_interval_s: Duration = 1.0
    connect_timeout_s: Duration = 2.0
    controller: ControllerLink | None = None
    redact: str = ""
    """``observability.redact`` as ``ACTION:WHERE:NAME`` entries (:mod:`lichen.redacting`); the default rules
    (Authorization, Cookie and X-Api-Key dropped) always apply"""
    redact_salt_file: str | None = None
    """the app's redaction salt file; without one a ``hash`` rule drops its field"""
    tracing: TracingSpec | None = None
    """``observability.tracing``: spans of sampled requests are exported (:mod:`lichen.gateway.spans`)"""
    app: str = ""
    """the app's name (the spans' ``service.namespace``)"""

    @field_validator("redact")
    @classmethod
    def _redact_rules(cls, text: str) -> str:
        """Well-formed entries, none naming a field the gateway's or a replica's request lines write."""
        return rules_text(parse_rules(text))

    @field_validator("routes")
    @classmethod
    def _unique_routes(cls, routes: list[RouteConfig]) -> list[RouteConfig]:
        seen: set[tuple[str, str | None, tuple[tuple[str, str], ...]]] = set()
        for route in routes:
            key = (route.prefix, route.host, tuple(sorted(route.headers.items())))
            if key in seen:
                raise ValueError(f"duplicate route {route.prefix!r} (host {route.host!r}, headers {route.headers})")
            seen.add(key)
        return routes

    def check_services(self, where: str) -> None:
        missing = sorted({r.service for r in self.routes} - set(self.services))
        if missing:
            raise ConfigError(f"routes name services with no entry under 'services': {', '.join(missing)}", where=where)


def redaction_of(config: GatewayConfig, base_dir: Path | None = None) -> Redaction:
    """The redaction plan of the gateway's log lines; a salt file that cannot be read is a ConfigError."""
    salt_file = config.redact_salt_file
    if salt_file and base_dir is not None and not Path(salt_file).is_absolute():
        salt_file = str(base_dir / salt_file)
    return load_redaction(config.redact, salt_file)


def as_endpoint(item: object) -> Endpoint:
    """A gateway :class:`Endpoint` from itself, a dict, or any object with ``url``, ``replica`` and ``revision``
    (such as the runtime's endpoint registry entries)."""
    if isinstance(item, Endpoint):
        return item
    if isinstance(item, dict):
        return Endpoint.model_validate(item)
    return Endpoint(
        url=str(getattr(item, "url")),
        replica=str(getattr(item, "replica", "") or ""),
        revision=str(getattr(item, "revision", "default") or "default"),
        ready=bool(getattr(item, "ready", True)),
    )


def render_config(
    spec: AppSpec,
    endpoints: Mapping[str, Sequence[object]],
    weights: dict[str, dict[str, float]] | None = None,
    *,
    idempotent_paths: dict[str, list[str]] | None = None,
    keys_db: str = ".lichen/keys.db",
    faults: Mapping[str, Sequence[FaultConfig]] | None = None,
) -> GatewayConfig:
    """The gateway config for an app: its routes, and the given endpoints per service.

    ``weights`` maps service → revision → weight (canary rollouts); a service
    with none sends to every revision evenly. A service without routes gets
    ``/<service>`` with the prefix stripped.
    """
    weights = weights or {}
    idempotent_paths = idempotent_paths or {}
    routes: list[RouteConfig] = []
    services: dict[str, ServiceConfig] = {}
    for name, service in spec.services.items():
        for route in routes_of(name, service):
            routes.append(RouteConfig(**route.model_dump(), service=name))
        services[name] = ServiceConfig(
            endpoints=[as_endpoint(e) for e in endpoints.get(name, [])],
            revision_weights=dict(weights.get(name, {})),
            max_inflight=service.max_inflight,
            idempotent_paths=list(idempotent_paths.get(name, [])),
            timeout_s=service.timeout_s,
            faults=list((faults or {}).get(name, [])),
            activation=(ActivationConfig(queue=service.autoscale.activation_queue,
                                         timeout_s=service.autoscale.activation_timeout_s)
                        if service.autoscale is not None and service.autoscale.min == 0 else None),
        )
    return GatewayConfig(
        host=spec.gateway.host, port=spec.gateway.port, settings=spec.gateway, routes=routes,
        services=services, keys_db=keys_db, redact=rules_text(spec.observability.redact_rules()),
        tracing=spec.observability.tracing, app=spec.app,
    )


def routes_of(name: str, service: ServiceSpec) -> list[RouteSpec]:
    """A service's routes: its own, or ``/<name>`` with the prefix stripped when it declares none."""
    return service.routes or [RouteSpec(prefix=f"/{name}", strip_prefix=True)]


def service_paths(spec: AppSpec) -> dict[str, str]:
    """Where each service's own path ``/`` sits on the gateway: its first route without a host or header
    condition, as the prefix when it is stripped and as ``""`` (the gateway's root) when it is not (the
    service's paths are then the gateway's). A service whose every route has a condition is left out."""
    paths = {}
    for name, service in spec.services.items():
        for route in routes_of(name, service):
            if route.host is None and not route.headers:
                paths[name] = route.prefix.rstrip("/") if route.strip_prefix else ""
                break
    return paths


def replica_urls(spec: AppSpec | None, gateway_url: str | None) -> dict[str, Any]:
    """``gateway_url`` and ``service_urls`` of the replica contract (``lichen.sdk.settings.ReplicaSettings``):
    how a replica calls the other services; nothing without a gateway."""
    if spec is None or gateway_url is None:
        return {}
    return {"gateway_url": gateway_url,
            "service_urls": {name: gateway_url + path for name, path in service_paths(spec).items()}}


def config_text(config: GatewayConfig) -> str:
    return json.dumps(config.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


def write_config(config: GatewayConfig, path: str | Path) -> None:
    """Write atomically (tmp + fsync + rename), so the gateway never reads half a file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(config_text(config))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_config(path: str | Path) -> GatewayConfig:
    """Read and validate a config file; errors name the file and the field."""
    source = Path(path)
    try:
        text = source.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read gateway config: {exc.strerror}", where=str(source)) from None
    try:
        data = yaml.load(text, Loader=LocatingSafeLoader) if source.suffix in (".yaml", ".yml") else json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ConfigError(f"not valid {'YAML' if source.suffix in ('.yaml', '.yml') else 'JSON'}: {exc}", where=str(source)) from None
    try:
        config = GatewayConfig.model_validate(data or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{field}: {first['msg']}{more}", where=str(source)) from None
    config.check_services(str(source))
    return config
