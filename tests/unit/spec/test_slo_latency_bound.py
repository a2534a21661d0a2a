"""slo.latency_ms must be below the service's longest timeout, when the user wrote it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from lichen.spec.models import ServiceSpec


def test_the_default_objective_never_refuses_a_short_timeout() -> None:
    spec = ServiceSpec.model_validate({"entrypoint": "m:S", "timeout_s": 0.25})  # the default 300 ms is not written
    assert spec.slo.latency_ms == 300


@pytest.mark.parametrize(("service", "refused"), [
    ({"timeout_s": 2, "slo": {"latency_ms": 2000}}, True),
    ({"timeout_s": 2, "slo": {"latency_ms": 1999}}, False),
    ({"timeout_s": 2, "routes": [{"prefix": "/a", "timeout_s": 5}], "slo": {"latency_ms": 3000}}, False),
    ({"timeout_s": 0.25, "slo": {"latency_ms": 300}}, True),
])
def test_a_written_objective_at_or_past_the_longest_timeout_is_refused(service: dict, refused: bool) -> None:
    if refused:
        with pytest.raises(ValidationError, match="must be below the longest timeout"):
            ServiceSpec.model_validate({"entrypoint": "m:S", **service})
    else:
        ServiceSpec.model_validate({"entrypoint": "m:S", **service})
