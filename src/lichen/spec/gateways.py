"""The ``gateway:`` section of ``lichen.yaml``: listener, TLS, balancing, auth, rate limits, retries, outliers,
admission, WebSockets."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from lichen.spec.bases import EnvName, SpecModel
from lichen.spec.quantities import Duration, MemoryBytes

class JwtSpec(SpecModel):
    algorithm: Literal["HS256", "RS256"] = "HS256"
    secret_env: EnvName | None = None
    jwks_file: str | None = None
    issuer: str | None = None
    audience: str | None = None

    @model_validator(mode="after")
    def _key_source(self) -> JwtSpec:
        if self.algorithm == "HS256" and not self.secret_env:
            raise ValueError("secret_env: required for HS256")
        if self.algorithm == "RS256" and not self.jwks_file:
            raise ValueError("jwks_file: required for RS256")
        return self


class AuthSpec(SpecModel):
    api_keys: bool = False
    jwt: JwtSpec | None = None


class RateLimitSpec(SpecModel):
    per_key_rps: Annotated[float, Field(gt=0)] | None = None
    per_ip_rps: Annotated[float, Field(gt=0)] | None = None
    burst: Annotated[int, Field(ge=1)] | None = None


class LimitsSpec(SpecModel):
    max_body_bytes: MemoryBytes = 10 * 1024 * 1024
    max_header_bytes: MemoryBytes = 16 * 1024
    body_idle_timeout_s: Annotated[Duration, Field(gt=0)] = 10.0
    """a request body that stops arriving for this long (slowloris on bodies) is answered 408 and closed"""


class HstsSpec(SpecModel):
    max_age_s: Annotated[int, Field(ge=0)] = 31536000
    """whole seconds, as the header carries them (31536000: one year)"""
    include_subdomains: bool = False


class TlsSpec(SpecModel):
    """TLS on the gateway's port: the certificate chain and key (PEM, relative to the app directory), reloaded
    when they change; TLS 1.2+ with Mozilla's "intermediate" ciphers (docs/gateway.md, "TLS")."""

    cert_file: str
    key_file: str
    min_version: Literal["1.2", "1.3"] = "1.2"
    redirect_http_port: Annotated[int, Field(ge=1, le=65535)] | None = None
    """a plaintext listener on the same host answering every request 308 to https"""
    hsts: HstsSpec | None = None
    """set: responses carry ``Strict-Transport-Security``"""

    @field_validator("min_version", mode="before")
    @classmethod
    def _version_text(cls, value: object) -> object:
        return {1.2: "1.2", 1.3: "1.3"}.get(value, value) if isinstance(value, float) else value  # YAML: 1.2


class WebSocketSpec(SpecModel):
    idle_timeout_s: Annotated[Duration, Field(gt=0)] = 300.0
    """a WebSocket with no byte either way for this long is closed"""
    max_connections: Annotated[int, Field(ge=0)] = 1000
    """open WebSockets at most (all services together); one more upgrade is answered 503; 0 refuses them all"""


class RetrySpec(SpecModel):
    attempts: Annotated[int, Field(ge=1)] = 3
    budget_ratio: Annotated[float, Field(ge=0, le=1)] = 0.2
    backoff_base_ms: Annotated[float, Field(ge=0)] = 10.0
    backoff_max_ms: Annotated[float, Field(ge=0)] = 250.0


class OutlierSpec(SpecModel):
    consecutive_failures: Annotated[int, Field(ge=1)] = 5
    base_ejection_s: Duration = 30.0
    max_ejection_s: Duration = 300.0
    max_ejection_percent: Annotated[int, Field(ge=0, le=100)] = 50


class AdmissionSpec(SpecModel):
    queue_size: Annotated[int, Field(ge=0)] = 64
    queue_timeout_s: Duration = 0.5


class GatewaySpec(SpecModel):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8080
    balancer: Literal["p2c", "round_robin", "hash"] = "p2c"
    hash_on: str | None = None
    auth: AuthSpec = Field(default_factory=AuthSpec)
    rate_limit: RateLimitSpec = Field(default_factory=RateLimitSpec)
    limits: LimitsSpec = Field(default_factory=LimitsSpec)
    retries: RetrySpec = Field(default_factory=RetrySpec)
    outlier_detection: OutlierSpec = Field(default_factory=OutlierSpec)
    admission: AdmissionSpec = Field(default_factory=AdmissionSpec)
    tls: TlsSpec | None = None
    websockets: WebSocketSpec = Field(default_factory=WebSocketSpec)
    mask_upstream_errors: bool = False
    """true: a 5xx a service answered itself keeps its status and Retry-After, but its body is the gateway's
    generic error (docs/gateway.md, "A service's own errors")"""

    @model_validator(mode="after")
    def _redirect_port(self) -> GatewaySpec:
        if self.tls is not None and self.tls.redirect_http_port == self.port:
            raise ValueError(f"tls.redirect_http_port: {self.port} is the gateway's own (TLS) port; pick another")
        return self

    @model_validator(mode="after")
    def _hash_key(self) -> GatewaySpec:
        if self.balancer == "hash" and not self.hash_on:
            raise ValueError("hash_on: required when balancer is 'hash' (e.g. 'header:X-User-ID' or 'path:user_id')")
        if self.hash_on and not re.fullmatch(r"(header|path):[\w-]+", self.hash_on):
            raise ValueError(f"hash_on: expected 'header:NAME' or 'path:PARAM', got {self.hash_on!r}")
        return self
