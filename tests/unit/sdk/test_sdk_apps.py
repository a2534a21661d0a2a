"""A Service's ASGI app in-process: built-ins, limits, metrics, readiness, registries."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
from prometheus_client import Counter
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

from lichen import Service, endpoint
from lichen.sdk.building import build_service_app, sse_event
from lichen.sdk.instruments import LATENCY_BUCKETS_S
from lichen.testing import ServiceClient


class Order(BaseModel):
    sku: str
    quantity: int


class Receipt(BaseModel):
    sku: str
    total: float


class Shop(Service):
    """A shop."""

    def setup(self) -> None:
        self.price = 2.5
        self.sold = Counter("shop_items_sold_total", "Items sold.", registry=self.metrics)

    @endpoint("/orders", method="POST", timeout_s=5, max_concurrency=2)
    def order(self, order: Order) -> Receipt:  # string annotations (from __future__) resolve
        self.sold.inc(order.quantity)
        return Receipt(sku=order.sku, total=order.quantity * self.price)

    @endpoint("/wait", method="POST", timeout_s=30, max_concurrency=1)
    async def wait(self) -> dict:
        await self.release.wait()
        return {"waited": True}


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_service_client_runs_setup_and_serves_typed_endpoints() -> None:
    with ServiceClient(Shop) as client:
        assert client.get("/readyz").json() == {"ready": True, "reason": "ready"}
        response = client.post("/orders", json={"sku": "tea", "quantity": 4})
        assert response.json() == {"sku": "tea", "total": 10.0}
        assert client.service.price == 2.5
        bad = client.post("/orders", json={"sku": "tea", "quantity": "many"})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "quantity"]
        metrics = client.get("/metrics").text
        schema = client.get("/openapi.json").json()
    assert schema["paths"]["/orders"]["post"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Order"
    }
    assert samples(metrics, "shop_items_sold_total") == {(): 4.0}
    assert samples(metrics, "lichen_requests_total")[
        (("endpoint", "/orders"), ("method", "POST"), ("status", "200"))
    ] == 1.0
    buckets = {float(dict(k)["le"]) for k in samples(metrics, "lichen_request_duration_seconds_bucket")}
    assert buckets == {*LATENCY_BUCKETS_S, float("inf")} and max(LATENCY_BUCKETS_S) == 60.0
    assert samples(metrics, "lichen_max_concurrency") == {(("endpoint", "/orders"),): 2.0, (("endpoint", "/wait"),): 1.0}


def test_each_app_has_its_own_registry() -> None:
    with ServiceClient(Shop) as first, ServiceClient(Shop) as second:
        first.post("/orders", json={"sku": "a", "quantity": 1})
        assert samples(second.get("/metrics").text, "shop_items_sold_total") == {(): 0.0}
        assert samples(first.get("/metrics").text, "shop_items_sold_total") == {(): 1.0}


def test_a_failing_setup_fails_the_client_with_its_own_error() -> None:
    class Broken(Shop):
        def setup(self) -> None:
            raise FileNotFoundError("weights.bin")

    with pytest.raises(FileNotFoundError, match="weights.bin"):
        with ServiceClient(Broken):
            pass


def test_readiness_follows_the_ready_hook_and_draining() -> None:
    class Flaky(Shop):
        healthy = False

        def ready(self) -> bool:
            if self.healthy is None:
                raise ConnectionError("db down")
            return self.healthy

    with ServiceClient(Flaky) as client:
        assert client.get("/readyz").json() == {"ready": False, "reason": "ready() returned false"}
        client.service.healthy = None
        assert "ready() raised ConnectionError: db down" in client.get("/readyz").json()["reason"]
        client.service.healthy = True
        assert client.get("/readyz").status_code == 200
        assert samples(client.get("/metrics").text, "lichen_ready") == {(): 1.0}
        client.replica.begin_draining()
        assert client.get("/readyz").status_code == 503
        assert samples(client.get("/metrics").text, "lichen_ready") == {(): 0.0}
        refused = client.post("/orders", json={"sku": "a", "quantity": 1})
        assert refused.status_code == 503 and refused.headers["connection"] == "close"
        assert client.get("/healthz").status_code == 200


def test_request_ids_are_echoed_or_generated_and_never_unsafe() -> None:
    with ServiceClient(Shop) as client:
        assert client.post("/orders", json={"sku": "a", "quantity": 1}, headers={"X-Request-ID": "r-1"}).headers[
            "x-request-id"
        ] == "r-1"
        replaced = client.post("/orders", json={"sku": "a", "quantity": 1}, headers={"X-Request-ID": "x" * 500})
        assert len(replaced.headers["x-request-id"]) == 16


def test_overflow_is_refused_at_once_not_queued() -> None:
    async def scenario() -> tuple[int, str, int]:
        app = build_service_app(Shop)
        app.service.release = asyncio.Event()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://replica") as client:
            first = asyncio.create_task(client.post("/wait"))
            while app.metrics.render().find(b'lichen_inflight_requests{endpoint="/wait"} 1.0') < 0:
                await asyncio.sleep(0.005)
            refused = await client.post("/wait")
            app.service.release.set()
            done = await first
        return refused.status_code, refused.headers.get("retry-after", ""), done.status_code

    assert asyncio.run(scenario()) == (503, "1", 200)


def test_sync_handlers_run_off_the_event_loop() -> None:
    seen: list[str] = []

    class Threads(Service):
        @endpoint("/where", method="GET")
        def where(self) -> dict:
            seen.append(threading.current_thread().name)
            return {}

        @endpoint("/where-async", method="GET")
        async def where_async(self) -> dict:
            seen.append(threading.current_thread().name)
            return {}

    with ServiceClient(Threads) as client:
        client.get("/where")
        client.get("/where-async")
    assert seen[0].startswith("lichen-handler") and not seen[1].startswith("lichen-handler")


def test_sse_event_encoding() -> None:
    assert sse_event("hello") == b"data: hello\n\n"
    assert sse_event("two\nlines") == b"data: two\ndata: lines\n\n"
    assert sse_event({"a": 1}) == b'data: {"a":1}\n\n'
    assert sse_event(Receipt(sku="x", total=1.0)) == b'data: {"sku":"x","total":1.0}\n\n'
    assert sse_event({"detail": "x"}, event="error") == b'event: error\ndata: {"detail":"x"}\n\n'
    assert sse_event(b"raw: bytes\n\n") == b"raw: bytes\n\n"


def test_a_stream_that_fails_ends_with_an_error_event() -> None:
    class Tokens(Service):
        @endpoint("/gen", method="GET", stream=True)
        def gen(self):
            yield "one"
            raise RuntimeError("model crashed")

    with ServiceClient(Tokens) as client:
        body = client.get("/gen").text
    assert body.startswith("data: one\n\n") and "event: error" in body and "internal server error" in body
    assert "model crashed" not in body and "RuntimeError" not in body  # internals stay in the log


def test_a_handler_log_line_carries_the_request_id() -> None:
    import io
    import json
    import logging

    from lichen.sdk.logs import JsonFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(static_fields={}))
    user_log = logging.getLogger("shop.user")
    user_log.addHandler(handler)
    user_log.setLevel(logging.INFO)

    class Logs(Service):
        @endpoint("/log", method="POST")
        def log(self) -> dict:  # a sync handler: logs from the handler thread
            user_log.info("computing")
            return {}

    try:
        with ServiceClient(Logs) as client:
            client.post("/log", headers={"X-Request-ID": "trace-9"})
    finally:
        user_log.removeHandler(handler)
    assert json.loads(stream.getvalue().splitlines()[0])["request_id"] == "trace-9"


def test_a_stream_whose_first_event_is_late_is_a_504() -> None:
    class Late(Service):
        def setup(self) -> None:
            self.never = asyncio.Event()

        @endpoint("/late", method="GET", stream=True, timeout_s=0.2)
        async def late(self):
            await self.never.wait()
            yield "too late"

    with ServiceClient(Late) as client:
        response = client.get("/late")
        assert response.status_code == 504
        assert samples(client.get("/metrics").text, "lichen_inflight_requests") == {(("endpoint", "/late"),): 0.0}


def test_metrics_are_served_at_the_specs_metrics_path(monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi import FastAPI

    from lichen.errors import ConfigError

    app = FastAPI()

    @app.get("/metrics")
    async def own_metrics() -> dict:  # the app's own /metrics: reachable once Lichen's moved elsewhere
        return {"own": True}

    monkeypatch.setenv("LICHEN_METRICS_PATH", "/internal/metrics")
    monkeypatch.setenv("LICHEN_SLO_LATENCY_MS", "200")
    with ServiceClient(app) as client:
        assert client.get("/metrics").json() == {"own": True}
        exposition = client.get("/internal/metrics").text
    assert "lichen_ready 1.0" in exposition and 'le="0.2"' in exposition  # a bucket at the SLO threshold
    with ServiceClient(Shop) as client:
        assert "lichen_requests_total" in client.get("/internal/metrics").text
        assert "/internal/metrics" in client.get("/.well-known/lichen").json()["builtins"]

    class Clash(Service):
        @endpoint("/internal/metrics", method="GET")
        def mine(self) -> dict:
            return {}

    with pytest.raises(ConfigError, match="where this replica serves its metrics"):
        ServiceClient(Clash).__enter__()
    for name, bad in (("LICHEN_METRICS_PATH", "/readyz"), ("LICHEN_METRICS_PATH", "metrics"),
                      ("LICHEN_METRICS_PATH", "/openapi.json"),
                      ("LICHEN_SLO_LATENCY_MS", "soon"), ("LICHEN_SLO_LATENCY_MS", "-5")):
        monkeypatch.setenv(name, bad)
        with pytest.raises(ConfigError, match=f"env {name}"):
            ServiceClient(Shop).__enter__()
        monkeypatch.delenv(name)


def test_a_plain_fastapi_app_counts_in_flight_requests_by_route() -> None:
    from fastapi import FastAPI

    app = FastAPI()
    seen: dict[str, str] = {}

    @app.get("/users/{user_id}")
    async def user(user_id: int) -> dict:
        seen["during"] = wrapped.metrics.render().decode()
        return {"user_id": user_id}

    with ServiceClient(app) as client:
        wrapped = client.replica
        assert client.get("/users/3").json() == {"user_id": 3}
        after = client.get("/metrics").text
    assert samples(seen["during"], "lichen_inflight_requests") == {(("endpoint", "/users/{user_id}"),): 1.0}
    assert samples(after, "lichen_inflight_requests") == {(("endpoint", "/users/{user_id}"),): 0.0}
    assert samples(after, "lichen_max_concurrency") == {}


def test_a_handlers_own_timeout_error_is_a_500_not_a_504() -> None:
    class Upstream(Service):
        @endpoint("/call", method="POST", timeout_s=30)
        async def call(self) -> dict:
            raise TimeoutError("upstream took too long")

    with ServiceClient(Upstream) as client:
        assert client.post("/call").status_code == 500


@pytest.mark.parametrize("lifespan", ["ignores", "raises"])
def test_a_raw_asgi_app_without_lifespan_support_still_gets_ready(lifespan: str) -> None:
    async def raw_app(scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            if lifespan == "raises":
                raise RuntimeError("no lifespan here")
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"raw"})

    with ServiceClient(raw_app) as client:
        assert client.get("/readyz").status_code == 200
        response = client.get("/anything")
        assert response.text == "raw" and "x-request-id" in response.headers
