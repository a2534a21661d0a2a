"""Fuzz every operation of an OpenAPI schema with schemathesis, each within a fixed Hypothesis budget.

schemathesis' own pytest integration (``schemathesis.pytest.from_fixture``)
does not run under pytest 9 (it sets ``Function._nodeid``, which pytest 9
no longer has), so each operation's cases come from ``operation.as_strategy()``
and run under :func:`fuzzing.fuzz_settings`: valid (positive) and invalid
(negative) parameters and bodies, every answer checked by ``not_a_server_error``
and ``response_schema_conformance``. Every operation runs even when one fails;
the failures come back as one list of lines, each naming the operation and
the request that failed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import schemathesis
from fuzzing import fuzz_settings
from hypothesis import given, note
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance

CHECKS = [not_a_server_error, response_schema_conformance]


def load_schema(url: str, **kwargs: Any) -> schemathesis.BaseSchema:
    """The OpenAPI schema at ``url``, with a fixed seed (the budget and the examples are Hypothesis')."""
    return schemathesis.openapi.from_url(url, config=SchemathesisConfig.from_dict({"seed": 17}), **kwargs)


def operations(schema: schemathesis.BaseSchema) -> list[Any]:
    found = []
    for result in schema.get_all_operations():
        found.append(result.ok())  # an operation the schema cannot describe raises here, naming it
    return found


def fuzz_operations(
    schema: schemathesis.BaseSchema,
    base_url: str,
    *,
    headers: dict[str, str] | None = None,
    max_examples: int = 10,
    skip: Callable[[Any], bool] = lambda _operation: False,
    adjust: Callable[[Any], None] = lambda _case: None,
    path_parameters: dict[str, str] | None = None,
    modes: tuple[GenerationMode, ...] = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE),
) -> tuple[list[str], int]:
    """Fuzz each operation not ``skip``-ped in each mode; returns (failures, how many requests were made).

    ``adjust`` may change a generated case before it is sent (e.g. cap a long
    poll); ``path_parameters`` fixes some path parameters (e.g. a real service name).
    """
    failures: list[str] = []
    calls = [0]
    for operation in operations(schema):
        if skip(operation):
            continue
        fixed = {k: v for k, v in (path_parameters or {}).items() if f"{{{k}}}" in operation.path}
        if path_parameters and not fixed:
            continue
        for mode in modes:
            strategy = operation.as_strategy(generation_mode=mode, path_parameters=fixed or None)

            @fuzz_settings(max_examples)
            @given(case=strategy)
            def run(case: schemathesis.Case) -> None:
                adjust(case)
                note(f"{case.method} {case.formatted_path} query={case.query!r} body={getattr(case, 'body', None)!r}")
                calls[0] += 1
                case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS, timeout=30)

            try:
                run()
            except Unsatisfiable:  # no invalid input exists (no parameters, or any string is valid): nothing to send
                assert mode is GenerationMode.NEGATIVE, operation.label
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - every operation runs; all failures are reported
                notes = "\n".join(getattr(exc, "__notes__", []))
                failures.append(f"{operation.label} ({mode.value}): {type(exc).__name__}: {exc}\n{notes}")
    return failures, calls[0]
