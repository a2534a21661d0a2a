"""Handlers written the many ways FastAPI users write them, served through a Service."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel
from starlette.responses import PlainTextResponse, Response

from lichen import Service, endpoint
from lichen.logs import as_event
from lichen.testing import ServiceClient


class Loose(Service):
    @endpoint("/plain", method="GET")
    def plain(self):  # no annotation at all  # noqa: ANN201
        return {"plain": True}

    @endpoint("/text", method="GET")
    def text(self) -> PlainTextResponse:
        return PlainTextResponse("hi", status_code=201)

    @endpoint("/either", method="GET")
    def either(self, raw: bool = False) -> dict | Response:
        return Response(b"raw", media_type="application/octet-stream") if raw else {"raw": False}

    @endpoint("/nothing", method="DELETE")
    async def nothing(self) -> None:
        return None


def test_handlers_without_a_pydantic_return_annotation_are_served() -> None:
    with ServiceClient(Loose) as client:
        assert client.get("/plain").json() == {"plain": True}
        response = client.get("/text")
        assert (response.status_code, response.text) == (201, "hi")
        assert client.get("/either").json() == {"raw": False}
        assert client.get("/either", params={"raw": "true"}).content == b"raw"
        assert client.delete("/nothing").json() is None
        assert "/plain" in client.get("/openapi.json").json()["paths"]


def test_a_stream_passes_an_http_exception_on_but_not_an_internal_error(caplog: pytest.LogCaptureFixture) -> None:
    class Tokens(Service):
        @endpoint("/refused", method="GET", stream=True)
        async def refused(self):
            yield "one"
            raise HTTPException(status_code=429, detail="quota used up")

        @endpoint("/crash", method="GET", stream=True)
        async def crash(self):
            yield "one"
            raise KeyError("db-password")

    with ServiceClient(Tokens) as client, caplog.at_level(logging.ERROR):
        refused = client.get("/refused").text
        crash = client.get("/crash", headers={"X-Request-ID": "req-42"})
    assert "event: error" in refused and "quota used up" in refused and "429" in refused
    assert "db-password" not in crash.text and "KeyError" not in crash.text
    assert '"request_id":"req-42"' in crash.text
    logged = [r for r in caplog.records if as_event(r).name == "stream_failed"]
    assert logged and as_event(logged[0]).fields["path"] == "/crash" and "db-password" in str(logged[0].exc_info[1])


def test_an_app_defining_a_builtin_path_is_warned_that_lichen_answers_it(caplog: pytest.LogCaptureFixture) -> None:
    app = FastAPI()

    @app.get("/healthz")
    def mine() -> dict:
        return {"mine": True}

    with caplog.at_level(logging.WARNING), ServiceClient(app) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
    shadowed = [as_event(r).fields for r in caplog.records if as_event(r).name == "builtin_route_shadowed"]
    assert shadowed and shadowed[0]["route"] == "/healthz"


def _within(seconds: float, call: Any) -> Any:
    """Run ``call`` in a thread; fail (instead of hanging the suite) if it does not return in time."""
    box: list[Any] = []
    worker = threading.Thread(target=lambda: box.append(call()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert box, f"no answer within {seconds} s"
    return box[0]


def test_a_hung_ready_hook_makes_readyz_say_so_and_never_blocks_metrics() -> None:
    release, calls = threading.Event(), []

    class Stuck(Service):
        def ready(self) -> bool:
            calls.append(1)
            release.wait(60)
            return True

        @endpoint("/x", method="GET")
        def x(self) -> int:
            return 1

    with ServiceClient(Stuck) as client:
        for _ in range(3):
            response = _within(20, lambda: client.get("/readyz"))
            assert response.status_code == 503
            assert response.json()["reason"].startswith("ready() has not returned within")
        assert len(calls) == 1, "one hook call at a time, not one thread per probe"
        assert "lichen_ready 0.0" in _within(20, lambda: client.get("/metrics")).text
        release.set()
        deadline = time.monotonic() + 20
        while _within(20, lambda: client.get("/readyz")).status_code != 200:
            assert time.monotonic() < deadline, "ready() returned but /readyz stayed 503"
            time.sleep(0.05)


class Search(BaseModel):
    q: str
    limit: int = 10


class Catalog(Service):
    @endpoint("/search", method="GET")
    def search(self, params: Search) -> dict:
        return params.model_dump()

    @endpoint("/items/{item_id}", method="DELETE")
    def delete(self, item_id: int, params: Search) -> dict:
        return {"id": item_id, **params.model_dump()}

    @endpoint("/search", method="POST")
    def search_body(self, params: Search) -> dict:
        return params.model_dump()


def test_a_model_parameter_on_a_get_endpoint_is_read_from_the_query_string() -> None:
    with ServiceClient(Catalog) as client:
        assert client.get("/search", params={"q": "tea", "limit": 3}).json() == {"q": "tea", "limit": 3}
        assert client.delete("/items/7", params={"q": "x"}).json() == {"id": 7, "q": "x", "limit": 10}
        bad = client.get("/search", params={"limit": "many"})
        assert bad.status_code == 422
        assert {tuple(e["loc"]) for e in bad.json()["detail"]} == {("query", "q"), ("query", "limit")}
        # POST keeps FastAPI's meaning: the model is the JSON body.
        assert client.post("/search", json={"q": "tea"}).json() == {"q": "tea", "limit": 10}


def test_an_endpoint_method_named_metrics_does_not_break_the_registry() -> None:
    class Stats(Service):
        @endpoint("/stats", method="GET")
        def metrics(self) -> dict:
            return {"n": 1}

    with ServiceClient(Stats) as client:
        assert client.get("/stats").json() == {"n": 1}
        assert 'lichen_requests_total{endpoint="/stats"' in client.get("/metrics").text


def test_an_unexpected_exception_is_a_json_500_with_the_request_id_and_nothing_internal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Leaky(Service):
        @endpoint("/sync", method="GET")
        def sync(self) -> dict:
            raise RuntimeError("password=hunter2")

        @endpoint("/async", method="GET")
        async def in_loop(self) -> dict:
            raise KeyError("password=hunter2")

    with ServiceClient(Leaky) as client, caplog.at_level(logging.ERROR):
        for path in ("/sync", "/async"):
            response = client.get(path, headers={"X-Request-ID": f"req{path.replace('/', '-')}"})
            assert response.status_code == 500
            assert response.json() == {"detail": "internal server error", "request_id": f"req{path.replace('/', '-')}"}
            assert "hunter2" not in response.text
    failed = [r for r in caplog.records if as_event(r).name == "request_failed"]
    assert {as_event(r).fields["request_id"] for r in failed} == {"req-sync", "req-async"}
    assert all(r.exc_info and "hunter2" in str(r.exc_info[1]) for r in failed)


def test_a_body_not_sent_as_json_gets_a_422_with_a_content_type_hint() -> None:
    with ServiceClient(Catalog) as client:
        for headers in ({"content-type": "text/plain"}, {"content-type": "application/x-www-form-urlencoded"}, {}):
            response = client.post("/search", content=b'{"q": "tea"}', headers=headers)
            assert response.status_code == 422
            assert response.json()["detail"][0]["loc"] == ["body"]
            assert "Content-Type: application/json" in response.json()["hint"]
        wrong_field = client.post("/search", json={"limit": 2})
        assert wrong_field.status_code == 422 and "hint" not in wrong_field.json()
        assert wrong_field.json()["detail"][0]["loc"] == ["body", "q"]


def test_a_ready_hook_that_returns_nothing_says_so() -> None:
    class Forgetful(Service):
        def ready(self) -> bool:
            self.checked = True  # ...and no return

        @endpoint("/x", method="GET")
        def x(self) -> int:
            return 1

    with ServiceClient(Forgetful) as client:
        response = client.get("/readyz")
    assert response.status_code == 503 and response.json()["reason"] == "ready() returned None"


def test_async_setup_and_teardown_are_awaited_on_the_servers_loop() -> None:
    events: list[str] = []

    class AsyncLife(Service):
        async def setup(self) -> None:
            await asyncio.sleep(0.01)
            self.lock = asyncio.Lock()  # bound to the loop the handlers run on
            events.append("setup")

        async def teardown(self) -> None:
            await asyncio.sleep(0)
            events.append("teardown")

        @endpoint("/x", method="GET")
        async def x(self) -> dict:
            async with self.lock:
                return {"ok": True}

    with ServiceClient(AsyncLife) as client:
        assert client.get("/readyz").status_code == 200
        assert client.get("/x").json() == {"ok": True}
    assert events == ["setup", "teardown"]


def test_a_generator_handler_streams_without_stream_true() -> None:
    class Tokens(Service):
        @endpoint("/sync", method="GET")
        def sync_tokens(self):  # noqa: ANN201
            yield "a"
            yield {"b": 1}

        @endpoint("/async", method="GET")
        async def async_tokens(self):  # noqa: ANN201
            yield "c"

    with ServiceClient(Tokens) as client:
        assert client.get("/sync").text == 'data: a\n\ndata: {"b":1}\n\n'
        response = client.get("/async")
        assert response.text == "data: c\n\n" and response.headers["content-type"].startswith("text/event-stream")
        listed = {e["path"]: e["stream"] for e in client.get("/.well-known/lichen").json()["endpoints"]}
    assert listed == {"/sync": True, "/async": True}
