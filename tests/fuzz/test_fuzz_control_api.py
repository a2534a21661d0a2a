"""schemathesis against the control API of a real ``lichen up``: no 5xx, and every answer matches its schema.

The schema is the controller's own ``/openapi.json``; every operation in it is
called with generated valid and invalid parameters and bodies, with the admin
token (``.lichen/token``), and each answer is checked by schemathesis'
``not_a_server_error`` and ``response_schema_conformance`` (tests/fuzz/openapi_fuzzing.py).
Left out: ``POST /v1/shutdown``, which ends the run; the session fixture calls
it last and checks its answer against the schema too (tests/fuzz/fuzz_apps.py).
"""

from __future__ import annotations

from typing import Any

import pytest
from fuzz_apps import FuzzApp
from openapi_fuzzing import CHECKS, fuzz_operations, load_schema

from lichen.api.serving import MAX_SCALE_REPLICAS

pytestmark = pytest.mark.slow


def short_wait(case: Any) -> None:
    """``GET /v1/endpoints`` is a long poll: a valid ``wait_s`` is capped at 0.05 s (the budget is seconds)."""
    if case.path == "/v1/endpoints" and case.query and "wait_s" in case.query:
        try:
            case.query["wait_s"] = min(float(case.query["wait_s"]), 0.05)
        except (TypeError, ValueError):
            pass  # an invalid one, generated on purpose: sent as it is


def test_every_control_api_operation_answers_without_5xx_and_as_its_schema_says(fuzz_app: FuzzApp) -> None:
    schema = load_schema(f"{fuzz_app.control_url}/openapi.json")
    failures, calls = fuzz_operations(schema, fuzz_app.control_url, headers=fuzz_app.auth, max_examples=12,
                                      skip=lambda op: op.path == "/v1/shutdown", adjust=short_wait)
    assert not failures, f"{len(failures)} failing operation(s) in {calls} requests:\n" + "\n".join(failures)
    assert calls > 100, calls


def test_operations_on_a_real_service_answer_without_5xx_and_as_their_schema_says(fuzz_app: FuzzApp) -> None:
    """The same with ``{service}`` a service that exists, so the calls reach the controller (not only its 404).

    ``scale`` is left out here (a valid body may ask for thousands of replicas
    of a real service); the test below sends it the bounds instead.
    """
    schema = load_schema(f"{fuzz_app.control_url}/openapi.json")
    failures, calls = fuzz_operations(schema, fuzz_app.control_url, headers=fuzz_app.auth, max_examples=6,
                                      skip=lambda op: op.path.endswith("/scale"), path_parameters={"service": "spare"})
    assert not failures, f"{len(failures)} failing operation(s) in {calls} requests:\n" + "\n".join(failures)
    assert calls > 20, calls


# 2**63 and above answered 500 (the state store's integer overflowed, after the controller had taken the count):
# serving.ScaleRequest now refuses more than MAX_SCALE_REPLICAS with 422
@pytest.mark.parametrize("replicas", [MAX_SCALE_REPLICAS + 1, 2**63, 2**70, 10**30, -1, 1.5, None])
def test_scale_refuses_replica_counts_out_of_range_without_5xx(fuzz_app: FuzzApp, replicas: object) -> None:
    schema = load_schema(f"{fuzz_app.control_url}/openapi.json")
    case = schema["/v1/services/{service}/scale"]["POST"].Case(path_parameters={"service": "spare"},
                                                                 body={"replicas": replicas})
    response = case.call_and_validate(base_url=fuzz_app.control_url, headers=fuzz_app.auth, checks=CHECKS, timeout=30)
    assert response.status_code == 422, response.text


# Each answered 500 before its fix in api/serving.py: after_id overflowed SQLite's integer (now bounded, 422);
# offsets that are JSON but not an object of byte offsets failed on .get() or seek() (now 400, naming offsets).
@pytest.mark.parametrize(("path", "query", "status"), [
    ("/v1/events", {"after_id": "-129877586130017139556352"}, 422),
    ("/v1/events", {"after_id": str(2**63)}, 422),
    ("/v1/logs/spare", {"offsets": "NaN"}, 400),
    ("/v1/logs/spare", {"offsets": "[]"}, 400),
    ("/v1/logs/spare", {"offsets": '{"spare-0": -1}'}, 400),
    ("/v1/logs/spare", {"offsets": '{"spare-0": "0"}'}, 400),
    ("/v1/logs/spare", {"offsets": '{"spare-0": 1e300}'}, 400),
    ("/v1/logs/spare", {"offsets": '{"spare-0": 0}'}, 200),
])
def test_query_parameters_the_fuzzer_broke_are_refused_without_5xx(fuzz_app: FuzzApp, path: str,
                                                                    query: dict[str, str], status: int) -> None:
    schema = load_schema(f"{fuzz_app.control_url}/openapi.json")
    template = "/v1/logs/{service}" if path.startswith("/v1/logs/") else path
    parameters = {"service": path.rsplit("/", 1)[-1]} if "{service}" in template else None
    case = schema[template]["GET"].Case(path_parameters=parameters, query=query)
    response = case.call_and_validate(base_url=fuzz_app.control_url, headers=fuzz_app.auth, checks=CHECKS, timeout=30)
    assert response.status_code == status, response.text
    if status == 400:
        assert "offsets" in response.json()["error"], response.text
