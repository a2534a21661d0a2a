"""The replica contract: the ``LICHEN_*`` environment between the controller and a replica.

:class:`ReplicaSettings` names every variable once and parses it with one
validator on both sides of the process boundary (starlette's ``config`` idea,
on pydantic)::

    # the controller, from the service's spec
    env.update(ReplicaSettings(service="api", grace_s=spec.termination_grace_s, ...).to_env())

    # the replica: lichen serve, the SDK, ServiceClient
    settings = ReplicaSettings.from_env()
    settings = settings.overridden(grace_s=5)      # a CLI flag wins over the env

A bad value is one :class:`~lichen.errors.ConfigError` naming the variable,
which the CLI prints as one line with exit code 2::

    env LICHEN_GRACE_S: must be a finite number of seconds >= 0, got 'soon'

An unset or empty variable takes its default. ``docs/sdk.md`` ("Environment a
supervised replica reads") is :meth:`ReplicaSettings.markdown_table`; a unit
test keeps the two equal.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterable, Mapping
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from lichen.errors import ConfigError
from lichen.redacting import Redaction, load_redaction, parse_rules, rules_text

FIXED_BUILTIN_PATHS = ("/healthz", "/readyz", "/.well-known/lichen", "/openapi.json")
"""Built-in paths a replica always answers itself (a Service also its OpenAPI schema); ``metrics_path`` takes none."""


def _number(value: Any, kind: type = float) -> Any:
    if isinstance(value, bool):
        raise ValueError
    if kind is int and isinstance(value, float):
        raise ValueError
    return kind(value.strip() if isinstance(value, str) else value)


def _seconds(value: Any) -> float:
    try:
        seconds = _number(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"must be a finite number of seconds >= 0, got {value!r}")
    return float(seconds)


def _positive_seconds(value: Any) -> float:
    try:
        seconds = _number(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if not 0 < seconds < math.inf:  # also refuses nan
        raise ValueError(f"must be a positive number of seconds, got {value!r}")
    return float(seconds)


def _positive_count(value: Any) -> int:
    try:
        count = _number(value, int)
    except (TypeError, ValueError):
        count = 0
    if count < 1:
        raise ValueError(f"must be a positive whole number, got {value!r}")
    return int(count)


def _port(value: Any) -> int:
    try:
        port = _number(value, int)
    except (TypeError, ValueError):
        port = -1
    if not 0 <= port <= 65535:
        raise ValueError(f"must be a TCP port from 1 to 65535 (0 picks a free one), got {value!r}")
    return int(port)


def _metrics_path(value: Any) -> str:
    if (not isinstance(value, str) or not value.startswith("/") or any(c.isspace() or c in "?#" for c in value)
            or value in FIXED_BUILTIN_PATHS):
        raise ValueError(f"must be a URL path such as /metrics, other than {', '.join(FIXED_BUILTIN_PATHS)}; "
                         f"got {value!r}")
    return value


def _latencies_ms(value: Any) -> tuple[float, ...]:
    parts: Iterable[Any] = value.split(",") if isinstance(value, str) else value
    latencies = []
    for part in parts:
        try:
            latency = _number(part)
        except (TypeError, ValueError):
            latency = math.nan
        if not 0 < latency < math.inf:
            raise ValueError(f"must be milliseconds > 0, comma-separated; got {value!r}")
        latencies.append(float(latency))
    return tuple(latencies)


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value or not value.isprintable():
        raise ValueError(f"must be a non-empty printable name, got {value!r}")
    return value


def _base_url(value: Any) -> str:
    parts = urlsplit(value) if isinstance(value, str) else None
    if (parts is None or parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment
            or any(c.isspace() or c == "," for c in value)):
        raise ValueError(f"must be an http:// or https:// URL with no query, such as http://127.0.0.1:8080; "
                         f"got {value!r}")
    return value.rstrip("/")


def _traces_url(value: Any) -> str:
    parts = urlsplit(value) if isinstance(value, str) else None
    if (parts is None or parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment
            or any(c.isspace() for c in value)):
        raise ValueError(f"must be an http:// or https:// URL such as http://127.0.0.1:4318/v1/traces; got {value!r}")
    return value


def _ratio(value: Any) -> float:
    try:
        ratio = _number(value)
    except (TypeError, ValueError):
        ratio = math.nan
    if not 0.0 <= ratio <= 1.0:  # also refuses nan
        raise ValueError(f"must be a number from 0 to 1, got {value!r}")
    return float(ratio)


def _service_urls(value: Any) -> dict[str, str]:
    if isinstance(value, Mapping):
        pairs: Iterable[Any] = value.items()
    elif isinstance(value, str):
        pairs = [tuple(part.split("=", 1)) if "=" in part else None for part in value.split(",") if part.strip()]
    else:
        pairs = [None]
    urls = {}
    for pair in pairs:
        name, url = pair if isinstance(pair, tuple) and len(pair) == 2 else ("", "")
        if not isinstance(name, str) or not name.strip() or "=" in name:
            raise ValueError(f"must be NAME=URL pairs, comma-separated; got {value!r}")
        urls[name.strip()] = _base_url(url.strip() if isinstance(url, str) else url)
    return urls


def _env_names(value: Any) -> tuple[str, ...]:
    parts: Iterable[Any] = value.split(",") if isinstance(value, str) else value
    names = tuple(part.strip() if isinstance(part, str) else part for part in parts)
    if not all(isinstance(name, str) and name.isidentifier() and name.isascii() for name in names if name != ""):
        raise ValueError(f"must be environment variable names, comma-separated; got {value!r}")
    return tuple(name for name in names if name)


def _redact_rules(value: Any) -> str:
    """Well-formed rules, none naming a field a request line writes itself (checked for tuples too)."""
    return rules_text(parse_rules(value if isinstance(value, str) else rules_text(value)))


Seconds = Annotated[float, BeforeValidator(_seconds)]
PositiveSeconds = Annotated[float, BeforeValidator(_positive_seconds)]
PositiveCount = Annotated[int, BeforeValidator(_positive_count)]
Port = Annotated[int, BeforeValidator(_port)]
MetricsPath = Annotated[str, BeforeValidator(_metrics_path)]
LatenciesMs = Annotated[tuple[float, ...], BeforeValidator(_latencies_ms)]
Name = Annotated[str, BeforeValidator(_name)]
BaseUrl = Annotated[str, BeforeValidator(_base_url)]
ServiceUrls = Annotated[dict[str, str], BeforeValidator(_service_urls)]
EnvNames = Annotated[tuple[str, ...], BeforeValidator(_env_names)]
RedactRules = Annotated[str, BeforeValidator(_redact_rules)]
TracesUrl = Annotated[str, BeforeValidator(_traces_url)]
Ratio = Annotated[float, BeforeValidator(_ratio)]


class ReplicaSettings(BaseModel):
    """What the controller tells one replica; each field is one ``LICHEN_*`` variable (its alias).

    Construct it with field names (``grace_s=2``) or variable names
    (``LICHEN_GRACE_S="2"``); either way every value goes through the same
    validator, and a bad one is a ``ConfigError`` at ``env LICHEN_...``.
    """

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")

    service: Name | None = Field(None, alias="LICHEN_SERVICE",
                                 description="the service's name; on every log line as `service`")
    replica: Name | None = Field(None, alias="LICHEN_REPLICA",
                                 description="this replica's id; on every log line as `replica`")
    revision: Name | None = Field(None, alias="LICHEN_REVISION",
                                  description="the service's revision; on every log line as `revision`")
    port: Port = Field(8000, alias="LICHEN_PORT", description="`--port`, chosen by the controller")
    grace_s: Seconds = Field(30.0, alias="LICHEN_GRACE_S",
                             description="`--grace-s`, from the spec's `termination_grace_s`")
    drain_s: Seconds = Field(1.0, alias="LICHEN_DRAIN_S",
                             description="`--drain-s`, the drain window after SIGTERM, at most half the grace "
                                         "(the controller sets 1; a service's `env` may override it)")
    timeout_s: PositiveSeconds = Field(30.0, alias="LICHEN_TIMEOUT_S",
                                       description="`timeout_s` of endpoints that do not set one, from the spec")
    max_concurrency: PositiveCount = Field(64, alias="LICHEN_MAX_CONCURRENCY",
                                           description="`max_concurrency` of endpoints that do not set one, "
                                                       "from the spec")
    metrics_path: MetricsPath = Field("/metrics", alias="LICHEN_METRICS_PATH",
                                      description="where the metrics are served, from the spec's `metrics_path` "
                                                  "(then `/metrics` is free for the app's own route)")
    slo_latency_ms: LatenciesMs = Field((), alias="LICHEN_SLO_LATENCY_MS",
                                        description="the spec's `slo.latency_ms` (comma-separated thresholds): "
                                                    "each gets a histogram bucket")
    app_dir: Name | None = Field(None, alias="LICHEN_APP_DIR",
                                 description="the app's directory (the model registry's default is under it)")
    controller: Name | None = Field(None, alias="LICHEN_CONTROLLER",
                                    description="the app's directory again, marking the process as this app's: "
                                                "`lichen down` and a restarted controller find it by it")
    gateway_url: BaseUrl | None = Field(None, alias="LICHEN_GATEWAY_URL",
                                        description="the app's gateway as this machine reaches it "
                                                    "(`http://127.0.0.1:8080`): `lichen.client` calls other services "
                                                    "through it")
    service_urls: ServiceUrls = Field(default_factory=dict, alias="LICHEN_SERVICE_URLS",
                                      description="each service's base URL on the gateway, `NAME=URL` "
                                                  "comma-separated: the URL its own path `/` is reached at "
                                                  "(`http://127.0.0.1:8080/sentiment` for a stripped prefix)")
    secret_names: EnvNames | None = Field(None, alias="LICHEN_SECRET_NAMES",
                                          description="the names of the replica's own secrets (comma-separated): "
                                                      "their values are written as `***` in what it prints to "
                                                      "stdout and stderr")
    redact: RedactRules | None = Field(None, alias="LICHEN_REDACT",
                                       description="`observability.redact` as `ACTION:WHERE:NAME` entries, "
                                                   "comma-separated: the fields hashed or dropped in its log lines "
                                                   "(`Authorization`, `Cookie`, `X-Api-Key` are always dropped)")
    redact_salt_file: Name | None = Field(None, alias="LICHEN_REDACT_SALT_FILE",
                                          description="the app's redaction salt (`.lichen/redact.salt`): `hash` "
                                                      "rules need it, else they drop their field")
    trace_endpoint: TracesUrl | None = Field(None, alias="LICHEN_TRACE_ENDPOINT",
                                             description="where spans go, as OTLP/HTTP protobuf (the "
                                                         "`observability.tracing` endpoint plus `/v1/traces`); "
                                                         "unset: no spans are recorded, a `traceparent` is "
                                                         "still passed on")
    trace_sampling_ratio: Ratio = Field(1.0, alias="LICHEN_TRACE_SAMPLING_RATIO",
                                        description="the share of new traces kept (`observability.tracing."
                                                    "sampling_ratio`); a request with a `traceparent` follows "
                                                    "its sampled flag")

    def __init__(self, /, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise _config_error(exc) from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ReplicaSettings:
        """The settings in ``environ`` (``os.environ``); unset or empty variables take their defaults."""
        environ = os.environ if environ is None else environ
        return cls(**{name: environ[name] for name in cls.env_names() if environ.get(name)})

    def to_env(self) -> dict[str, str]:
        """The variables to put in a replica's environment; fields left unset are not written."""
        env = {}
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if value is not None and value != {}:
                env[str(field.alias)] = _env_text(value)
        return env

    def overridden(self, **values: Any) -> ReplicaSettings:
        """These settings with the given fields replaced (``None`` keeps the env's value): CLI flags win.

        A bad value is located at its flag (``--grace-s``), not at the variable.
        """
        given = {name: value for name, value in values.items() if value is not None}
        try:
            return type(self)(**{**self.model_dump(), **given})
        except ConfigError as exc:
            for name in given:
                if exc.where == f"env {self.env_name(name)}":
                    exc.where = "--" + name.replace("_", "-")
            raise

    @property
    def drain_window_s(self) -> float:
        """The drain window actually used: at most half the grace period, so in-flight requests keep the rest."""
        return max(0.0, min(self.drain_s, self.grace_s / 2))

    def log_fields(self) -> dict[str, str]:
        """``service``, ``replica`` and ``revision`` when set: the fields on every log line of this replica."""
        fields = {"service": self.service, "replica": self.replica, "revision": self.revision}
        return {name: value for name, value in fields.items() if value is not None}

    def redaction(self) -> Redaction:
        """The redaction plan of this replica's log lines (one per process: :func:`_redaction`)."""
        return _redaction(self.redact or "", self.redact_salt_file)

    @classmethod
    def env_name(cls, field: str) -> str:
        """The variable that carries ``field`` (``"grace_s"`` -> ``"LICHEN_GRACE_S"``)."""
        return str(cls.model_fields[field].alias)

    @classmethod
    def env_names(cls) -> tuple[str, ...]:
        return tuple(str(field.alias) for field in cls.model_fields.values())

    @classmethod
    def markdown_table(cls) -> str:
        """The contract as the table in docs/sdk.md: variable, meaning, default."""
        rows = ["| variable | meaning | default |", "|---|---|---|"]
        for field in cls.model_fields.values():
            default = "unset" if field.default in (None, ()) or field.default_factory is dict \
                else f"`{_env_text(field.default)}`"
            rows.append(f"| `{field.alias}` | {field.description} | {default} |")
        return "\n".join(rows) + "\n"


@functools.lru_cache(maxsize=4)
def _redaction(rules: str, salt_file: str | None) -> Redaction:
    """A bad salt file is a ConfigError naming the file."""
    return load_redaction(rules, salt_file)


def _env_text(value: Any) -> str:
    if isinstance(value, dict):
        return ",".join(f"{name}={url}" for name, url in value.items())
    if isinstance(value, tuple):
        return ",".join(_env_text(item) for item in value)
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    return str(value)


def _config_error(exc: ValidationError) -> ConfigError:
    """The first problem, named by its variable: ``env LICHEN_GRACE_S: must be ...``."""
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in error["loc"]) or "env"
    if where in ReplicaSettings.model_fields:
        where = ReplicaSettings.env_name(where)
    if error["type"] == "extra_forbidden":
        return ConfigError(f"{where} is not part of the replica contract (one of "
                           f"{', '.join(ReplicaSettings.env_names())})", where="ReplicaSettings")
    cause = (error.get("ctx") or {}).get("error")
    message = str(cause) if isinstance(cause, ValueError) else error["msg"]
    return ConfigError(message, where=f"env {where}")
