"""``observability.tracing``: where spans go and how many traces are kept (docs/observability.md#tracing)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, field_validator

from lichen.spec.bases import SpecModel, _positive
from lichen.spec.quantities import Duration

_ENDPOINT = re.compile(r"^https?://[^\s/?#@]+(/[^\s?#]*)?$")


class TracingSpec(SpecModel):
    """``observability.tracing``: W3C trace context through the gateway and replicas, spans exported as OTLP/HTTP
    protobuf (docs/observability.md#tracing)."""

    endpoint: str
    """the collector's OTLP/HTTP base URL (``/v1/traces`` is added), as ``OTEL_EXPORTER_OTLP_ENDPOINT``"""
    sampling_ratio: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0
    """the share of new traces kept; a request that carries a ``traceparent`` follows its sampled flag"""
    export_timeout_s: Duration = 10.0

    _timeout_positive = field_validator("export_timeout_s")(_positive)

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not _ENDPOINT.match(value):
            raise ValueError(f"must be an http(s) URL such as http://127.0.0.1:4318 (the OTLP/HTTP base; /v1/traces "
                             f"is added), got {value!r}")
        return value

    def traces_url(self) -> str:
        return self.endpoint.rstrip("/") + "/v1/traces"
