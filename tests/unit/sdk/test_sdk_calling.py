"""lichen.client: a call to another service goes to its base URL on the gateway and carries the request id."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
from pydantic import BaseModel

from lichen import Service, endpoint
from lichen.client import AsyncClient, Client, forwarded_headers, service_url
from lichen.errors import ConfigError
from lichen.logs import REQUEST_ID
from lichen.sdk.settings import ReplicaSettings
from lichen.testing import ServiceClient

SETTINGS = ReplicaSettings(gateway_url="http://127.0.0.1:8080",
                           service_urls={"sentiment": "http://127.0.0.1:8080/sentiment", "api": "http://127.0.0.1:8080"})


def recording() -> tuple[list[httpx.Request], httpx.MockTransport]:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    return seen, httpx.MockTransport(answer)


def test_a_service_name_resolves_to_its_base_url_and_none_to_the_gateway() -> None:
    assert service_url("sentiment", SETTINGS) == "http://127.0.0.1:8080/sentiment"
    assert service_url("api", SETTINGS) == "http://127.0.0.1:8080"
    assert service_url(None, SETTINGS) == "http://127.0.0.1:8080"


def test_an_unknown_service_or_no_gateway_is_a_config_error_naming_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        service_url("sentimnet", SETTINGS)
    assert caught.value.where == "env LICHEN_SERVICE_URLS"
    assert "no service 'sentimnet'" in caught.value.message and "services: api, sentiment" in caught.value.message
    with pytest.raises(ConfigError) as caught:
        Client("sentiment", settings=ReplicaSettings())
    assert caught.value.where == "env LICHEN_GATEWAY_URL" and "not started by `lichen up`" in caught.value.message


def test_the_client_reads_the_replica_contract_from_the_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SETTINGS.to_env().items():
        monkeypatch.setenv(name, value)
    with Client("sentiment") as client:
        assert str(client.base_url) == "http://127.0.0.1:8080/sentiment/"


def test_the_request_being_handled_gives_its_id_to_each_call_when_it_is_sent() -> None:
    seen, transport = recording()
    with Client("sentiment", settings=SETTINGS, transport=transport) as client:  # made once, as in setup()
        client.post("/v1/score", json={"text": "hi"})  # no request being handled: no id
        token = REQUEST_ID.set("req-1")
        try:
            client.post("/v1/score", json={"text": "hi"})
            client.get("/v1/score", headers={"X-Request-ID": "mine"})  # a header the caller sets wins
        finally:
            REQUEST_ID.reset(token)
        token = REQUEST_ID.set("req-2")
        try:
            client.get("/healthz")
        finally:
            REQUEST_ID.reset(token)
    assert [str(r.url) for r in seen[:2]] == ["http://127.0.0.1:8080/sentiment/v1/score"] * 2
    assert [r.headers.get("x-request-id") for r in seen] == [None, "req-1", "mine", "req-2"]
    assert forwarded_headers() == {}


def test_the_async_client_forwards_the_id_of_its_task() -> None:
    seen, transport = recording()

    async def handle(client: AsyncClient, request_id: str) -> None:
        REQUEST_ID.set(request_id)  # each task has its own context, as each request does
        await asyncio.sleep(0)
        await client.get("/v1/score")

    async def main() -> None:
        async with AsyncClient("sentiment", settings=SETTINGS, transport=transport,
                               event_hooks={"request": [lambda r: asyncio.sleep(0)]}) as client:
            await asyncio.gather(handle(client, "a"), handle(client, "b"))

    asyncio.run(main())
    assert sorted(r.headers["x-request-id"] for r in seen) == ["a", "b"]


class Text(BaseModel):
    text: str


SEEN_BY_SENTIMENT, SENTIMENT = recording()


class Feedback(Service):
    def setup(self) -> None:
        self.sentiment = Client("sentiment", settings=SETTINGS, transport=SENTIMENT)

    @endpoint("/v1/feedback", method="POST")
    def feedback(self, req: Text) -> dict:
        self.sentiment.post("/v1/score", json={"text": req.text, "thread": threading.current_thread().name})
        return {"ok": True}


def test_a_sync_endpoint_forwards_the_incoming_request_id() -> None:
    """In a real service: the sync handler runs in a thread, and still forwards the id the SDK took from the request."""
    SEEN_BY_SENTIMENT.clear()
    with ServiceClient(Feedback) as client:
        response = client.post("/v1/feedback", json={"text": "great"}, headers={"X-Request-ID": "chain-42"})
        minted = client.post("/v1/feedback", json={"text": "ok"})
    assert response.status_code == 200 and response.headers["x-request-id"] == "chain-42"
    assert [r.headers.get("x-request-id") for r in SEEN_BY_SENTIMENT] == ["chain-42", minted.headers["x-request-id"]]
