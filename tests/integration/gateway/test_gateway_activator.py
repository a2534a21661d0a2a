"""The gateway's activator with real processes: requests for a service with no ready replica are held, the
controller is asked for one at once (with its bearer token), and the first config with a ready replica
releases them; a full queue and a timeout are 503s with Retry-After. The "controller" is a small HTTP server
in the test that writes the gateway's next config when asked, as `lichen up` does."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import signal
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_harness import Backend, GatewayProcess, WsBackend, wait_until
from websockets.asyncio.client import connect

pytestmark = pytest.mark.slow

TOKEN = "t0ken"


class FakeController:
    """Answers ``POST /v1/services/<name>/activate``; ``on_ask`` runs on each ask (in the server's thread)."""

    def __init__(self, tmp: Path) -> None:
        self.asks: list[dict[str, Any]] = []
        self.on_ask: Any = None
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                owner.asks.append({"path": self.path, "authorization": self.headers.get("authorization")})
                if owner.on_ask is not None:
                    owner.on_ask()
                body = b'{"activated": true}'
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.info_file, self.token_file = tmp / "controller.json", tmp / "token"
        self.info_file.write_text(json.dumps({"url": f"http://127.0.0.1:{self.server.server_port}"}))
        self.token_file.write_text(TOKEN + "\n")

    def link(self) -> dict[str, str]:
        return {"info_file": str(self.info_file), "token_file": str(self.token_file)}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[FakeController]:
    fake = FakeController(tmp_path)
    yield fake
    fake.close()


@pytest.fixture
def cleanup() -> Iterator[list[Any]]:
    started: list[Any] = []
    yield started
    for thing in started:
        thing.kill() if isinstance(thing, Backend) else thing.stop()


def config(controller: FakeController, activation: dict[str, Any], endpoints: list[dict[str, Any]]) -> dict[str, Any]:
    return {"controller": controller.link(), "routes": [{"prefix": "/api", "service": "cold", "strip_prefix": True}],
            "services": {"cold": {"endpoints": endpoints, "activation": activation}}}


def test_held_requests_are_released_to_the_first_ready_replica(controller, cleanup, tmp_path) -> None:
    backend = Backend("r1", tmp_path).wait()
    cleanup.append(backend)
    limited = config(controller, {"queue": 10, "timeout_s": 20}, [])
    limited["services"]["cold"]["max_inflight"] = 1  # held requests wait for a replica, not for an admission slot
    gateway = GatewayProcess(limited, tmp_path)
    cleanup.append(gateway)

    def start_a_replica() -> None:  # the "controller" starts one, ready after 1 s (past the 0.5 s admission wait)
        ready = config(controller, {"queue": 10, "timeout_s": 20}, [backend.endpoint()])
        ready["services"]["cold"]["max_inflight"] = 1
        threading.Timer(1.0, lambda: gateway.update(**ready)).start()

    controller.on_ask = lambda: None if controller.asks[1:] else start_a_replica()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda i: httpx.get(f"{gateway.url}/api/hello?i={i}", timeout=30), range(4)))
    assert [r.status_code for r in responses] == [200] * 4, [r.text for r in responses]
    assert controller.asks and controller.asks[0] == {"path": "/v1/services/cold/activate",
                                                      "authorization": f"Bearer {TOKEN}"}
    assert gateway.metric("lichen_cold_start_seconds_count", service="cold") == 1  # one cold start, four requests
    assert gateway.metric("lichen_gateway_activations_total", service="cold", outcome="released") == 4
    assert gateway.metric("lichen_gateway_held_requests", service="cold") == 0
    (activated,) = gateway.log_events("activated")
    assert activated["service"] == "cold" and activated["cold_start_s"] > 0
    # with a ready replica, nothing is held: the next request goes straight through
    assert httpx.get(f"{gateway.url}/api/hello", timeout=5).status_code == 200
    assert gateway.metric("lichen_gateway_activations_total", service="cold") == 4


def test_a_full_queue_and_a_timeout_answer_503_with_retry_after(controller, cleanup, tmp_path) -> None:
    gateway = GatewayProcess(config(controller, {"queue": 2, "timeout_s": 1.5}, []), tmp_path)
    cleanup.append(gateway)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        held = [pool.submit(httpx.get, f"{gateway.url}/api/hello", timeout=30) for _ in range(2)]
        wait_until(lambda: gateway.metric("lichen_gateway_held_requests", service="cold") == 2, "two held")
        full = httpx.get(f"{gateway.url}/api/hello", timeout=30)
        timed_out = [f.result() for f in held]
    assert full.status_code == 503 and full.headers["retry-after"] == "1"
    assert "too many requests are waiting" in full.json()["error"]
    assert [r.status_code for r in timed_out] == [503, 503]
    assert all(r.headers["retry-after"] == "1" and "did not start a replica in time" in r.json()["error"]
               for r in timed_out)
    assert gateway.metric("lichen_gateway_activations_total", service="cold", outcome="full") == 1
    assert gateway.metric("lichen_gateway_activations_total", service="cold", outcome="timeout") == 2
    assert gateway.metric("lichen_cold_start_seconds_count", service="cold") == 0
    assert len(controller.asks) >= 1  # asked at once, and again while the requests stayed held


def test_without_activation_no_ready_replica_is_an_immediate_503(controller, cleanup, tmp_path) -> None:
    plain = config(controller, {"queue": 1, "timeout_s": 1}, [])
    del plain["services"]["cold"]["activation"]
    gateway = GatewayProcess(plain, tmp_path)
    cleanup.append(gateway)
    response = httpx.get(f"{gateway.url}/api/hello", timeout=10)
    assert response.status_code == 503 and "no ready upstream" in response.text
    assert controller.asks == []


def test_a_stopping_gateway_answers_held_requests_at_once(controller, cleanup, tmp_path) -> None:
    gateway = GatewayProcess(config(controller, {"queue": 5, "timeout_s": 60}, []), tmp_path)
    cleanup.append(gateway)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        held = pool.submit(httpx.get, f"{gateway.url}/api/hello", timeout=30)
        wait_until(lambda: gateway.metric("lichen_gateway_held_requests", service="cold") == 1, "one held")
        gateway.process.send_signal(signal.SIGTERM)
        response = held.result()
    assert response.status_code == 503 and "the gateway is stopping" in response.json()["error"]
    assert gateway.process.wait(timeout=10) == 0  # answered, not waited out for the 10 s drain


def test_a_websocket_to_a_service_at_zero_wakes_it_and_is_relayed(controller, cleanup, tmp_path) -> None:
    backend = WsBackend("w1", tmp_path)
    cleanup.append(backend)
    gateway = GatewayProcess(config(controller, {"queue": 10, "timeout_s": 20}, []), tmp_path)
    cleanup.append(gateway)
    ready = config(controller, {"queue": 10, "timeout_s": 20}, [{"url": f"http://127.0.0.1:{backend.port}"}])
    controller.on_ask = lambda: None if controller.asks[1:] else gateway.update(**ready)

    async def talk() -> str:
        async with connect(f"ws://127.0.0.1:{gateway.port}/api/echo", open_timeout=30) as ws:
            await ws.send("awake")
            return await ws.recv()

    assert asyncio.run(talk()) == "awake"
    assert controller.asks[0]["path"] == "/v1/services/cold/activate"
    assert gateway.metric("lichen_gateway_activations_total", service="cold", outcome="released") == 1
    assert gateway.metric("lichen_gateway_websocket_upgrades_total", service="cold", outcome="upgraded") == 1
