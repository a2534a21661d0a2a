"""The ``gateway:`` section of ``lichen.yaml``: listener, balancing, auth, rate limits, retries, outliers, admission."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, model_validator

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
    mask_upstream_errors: bool = False
    """true: a 5xx a service answered itself keeps its status and Retry-After, but its body is the gateway's
    generic error (docs/gateway.md, "A service's own errors")"""

    @model_validator(mode="after")
    def _hash_key(self) -> GatewaySpec:
        if self.balancer == "hash" and not self.hash_on:
            raise ValueError("hash_on: required when balancer is 'hash' (e.g. 'header:X-User-ID' or 'path:user_id')")
        if self.hash_on and not re.fullmatch(r"(header|path):[\w-]+", self.hash_on):
            raise ValueError(f"hash_on: expected 'header:NAME' or 'path:PARAM', got {self.hash_on!r}")
        return self
