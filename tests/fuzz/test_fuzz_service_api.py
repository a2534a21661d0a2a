"""schemathesis against services' OpenAPI: directly on each replica and through the gateway, no 5xx, schema kept.

Two SDK services of the session's app (tests/fuzz/fuzz_apps.py): ``target``
(tests/fuzz/fuzzsvc.py: path and query parameters, nested bodies, enums, lists)
behind the gateway's routes ``/v1/orders`` and ``/v1/items``, and the
``sentiment`` example at ``/sentiment`` (prefix stripped). Each replica's own
``/openapi.json`` is the schema; each operation gets valid and invalid
parameters and bodies (tests/fuzz/openapi_fuzzing.py), and every answer,
the replica's or the gateway's, must be below 500 and match the schema.
"""

from __future__ import annotations

import threading

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fuzz_apps import FuzzApp
from openapi_fuzzing import fuzz_operations, load_schema
from pydantic import BaseModel
from schemathesis.generation import GenerationMode
from waiting import free_port, wait_until

pytestmark = pytest.mark.slow

GATEWAY_PREFIX = {"target": "", "sentiment": "/sentiment"}


@pytest.mark.parametrize("service", ["target", "sentiment"])
@pytest.mark.parametrize("via", ["replica", "gateway"])
def test_service_operations_answer_without_5xx_and_as_their_schema_says(fuzz_app: FuzzApp, service: str,
                                                                         via: str) -> None:
    replica_url = fuzz_app.replica_urls[service]
    base_url = replica_url if via == "replica" else fuzz_app.gateway_url + GATEWAY_PREFIX[service]
    schema = load_schema(f"{replica_url}/openapi.json")
    failures, calls = fuzz_operations(schema, base_url, max_examples=12)
    assert not failures, f"{len(failures)} failing operation(s) in {calls} requests:\n" + "\n".join(failures)
    assert calls > 20, calls


def test_the_fuzzer_reports_server_errors_and_schema_violations() -> None:
    """The checks above can fail: a small API with a 500 and an answer off its schema is caught on both."""
    api = FastAPI()

    class Item(BaseModel):
        id: int

    @api.get("/boom/{n}")
    async def boom(n: int) -> dict[str, int]:
        if n > 5:
            raise RuntimeError("a bug")  # a 500
        return {"n": n}

    @api.get("/items/{item_id}", responses={200: {"model": Item}})
    async def item(item_id: int) -> JSONResponse:
        return JSONResponse({"id": str(item_id)})  # a string where the schema says integer

    server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, "the small API to listen")
        base_url = f"http://127.0.0.1:{server.config.port}"
        failures, _ = fuzz_operations(load_schema(f"{base_url}/openapi.json"), base_url, max_examples=30,
                                      modes=(GenerationMode.POSITIVE,))
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert len(failures) == 2, failures
    assert failures[0].startswith("GET /boom/{n} (positive)") and "Server error" in failures[0], failures[0]
    assert failures[1].startswith("GET /items/{item_id} (positive)") and "violates schema" in failures[1], failures[1]
