"""Issue 2 "Must show": a real `lichen serve` process, driven over HTTP."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sdk_replicas import Replica, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def echo(serve_factory: Callable[..., Replica]) -> Replica:
    replica = serve_factory(
        "echo_service:Echo", env={"LICHEN_SERVICE": "echo", "LICHEN_REPLICA": "echo-0", "LICHEN_REVISION": "r1"}
    )
    wait_until(lambda: replica.answers("/readyz") == 200, "echo ready")
    return replica


def in_background(call: Callable[[], httpx.Response]) -> tuple[threading.Thread, list[Any]]:
    box: list[Any] = []

    def run() -> None:
        try:
            box.append(call())
        except Exception as exc:  # surfaced by the test's assertion on box
            box.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


def test_an_endpoint_call_returns_the_typed_response_and_logs_one_json_line(echo: Replica) -> None:
    response = echo.client.post("/echo", json={"text": "hello world", "times": 2}, headers={"X-Request-ID": "req-42"})
    assert response.status_code == 200
    assert response.json() == {"echoed": "hello world hello world", "replica_setup": True}
    assert response.headers["x-request-id"] == "req-42"

    generated = echo.client.get("/items/7", params={"verbose": "true"})
    assert generated.json() == {"item_id": 7, "verbose": True}
    assert len(generated.headers["x-request-id"]) >= 16

    line = wait_until(
        lambda: next((r for r in echo.logs() if r.get("request_id") == "req-42"), None), "the request's log line"
    )
    assert line["event"] == "request" and line["logger"] == "lichen.access"
    assert line["method"] == "POST" and line["path"] == "/echo" and line["status"] == 200
    assert line["latency_ms"] >= 0 and line["level"] == "info" and line["ts"].endswith("Z")
    assert (line["service"], line["replica"], line["revision"]) == ("echo", "echo-0", "r1")


def test_a_bad_body_is_a_422_naming_the_field(echo: Replica) -> None:
    response = echo.client.post("/echo", json={"text": "hi", "times": 99})
    assert response.status_code == 422
    assert ["body", "times"] in [error["loc"] for error in response.json()["detail"]]
    missing = echo.client.post("/echo", json={"times": 1})
    assert ["body", "text"] in [error["loc"] for error in missing.json()["detail"]]


def test_metrics_counters_move(echo: Replica) -> None:
    before = echo.metric("lichen_requests_total", endpoint="/echo", method="POST", status="200") or 0.0
    words_before = echo.metric("echo_words_total") or 0.0
    for _ in range(3):
        assert echo.client.post("/echo", json={"text": "a b"}).status_code == 200
    assert echo.metric("lichen_requests_total", endpoint="/echo", method="POST", status="200") == before + 3
    assert echo.metric("echo_words_total") == words_before + 6  # the service's own metric, same registry
    assert echo.metric("lichen_request_duration_seconds_bucket", endpoint="/echo", method="POST", le="60.0") >= 3
    assert echo.metric("lichen_max_concurrency", endpoint="/echo") == 8
    assert echo.metric("lichen_ready") == 1.0


def test_a_timeout_is_a_504_and_a_sync_handler_keeps_its_slot_until_it_returns(echo: Replica) -> None:
    response = echo.client.post("/sleepy", params={"gate": "sleepy-1"})
    assert response.status_code == 504
    assert "timeout_s" in response.json()["detail"]
    # Python cannot stop the thread: it still counts as in flight until it returns.
    assert echo.metric("lichen_inflight_requests", endpoint="/sleepy") == 1.0
    echo.open_gate("sleepy-1")
    wait_until(lambda: echo.metric("lichen_inflight_requests", endpoint="/sleepy") == 0.0, "the thread to return")

    assert echo.client.post("/sleepy-async", params={"gate": "never"}).status_code == 504
    assert echo.metric("lichen_inflight_requests", endpoint="/sleepy-async") == 0.0  # cancelled at once
    assert echo.metric("lichen_requests_total", endpoint="/sleepy", method="POST", status="504") == 1.0


def test_concurrency_overflow_is_a_503_with_retry_after(echo: Replica) -> None:
    held = [in_background(lambda: echo.client.post("/hold", params={"gate": "overflow"})) for _ in range(2)]
    wait_until(lambda: echo.metric("lichen_inflight_requests", endpoint="/hold") == 2.0, "two held requests")
    refused = echo.client.post("/hold", params={"gate": "overflow"})
    assert refused.status_code == 503
    assert int(refused.headers["retry-after"]) >= 1
    assert "max_concurrency" in refused.json()["detail"]
    echo.open_gate("overflow")
    for thread, box in held:
        thread.join(timeout=60)
        assert box and box[0].status_code == 200 and box[0].json() == {"released": True}
    assert echo.metric("lichen_requests_total", endpoint="/hold", method="POST", status="503") == 1.0


def test_server_sent_events_stream_incrementally(echo: Replica) -> None:
    with echo.client.stream("GET", "/tokens", params={"gate": "stream", "n": 3}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        first = next(line for line in lines if line)
        assert first == 'data: {"token":0}'  # arrived while the handler still waits on the gate
        echo.open_gate("stream")
        rest = [line for line in lines if line]
    assert rest == ['data: {"token":1}', 'data: {"token":2}']
    assert echo.client.get("/sync-tokens", params={"n": 2}).text == "data: t0\n\ndata: t1\n\n"


def test_well_known_lists_endpoints_for_the_gateway(echo: Replica) -> None:
    listing = echo.client.get("/.well-known/lichen").json()
    by_path = {(e["method"], e["path"]): e for e in listing["endpoints"]}
    assert by_path[("POST", "/echo")] == {
        "path": "/echo", "method": "POST", "timeout_s": 5.0, "max_concurrency": 8, "idempotent": False, "stream": False
    }
    assert by_path[("POST", "/boom")]["idempotent"] is True
    assert by_path[("GET", "/items/{item_id}")]["idempotent"] is True
    assert "/echo" in echo.client.get("/openapi.json").json()["paths"]


def test_readyz_is_false_during_a_slow_setup_and_true_after(serve_factory: Callable[..., Replica]) -> None:
    replica = serve_factory("slow_setup_service:SlowSetup")
    assert replica.answers("/healthz") == 200  # the loop answers while setup() runs in its thread
    not_ready = replica.client.get("/readyz")
    assert not_ready.status_code == 503 and not_ready.json()["ready"] is False
    assert replica.metric("lichen_ready") == 0.0
    replica.open_gate("setup")
    wait_until(lambda: replica.answers("/readyz") == 200, "readiness after setup")
    assert replica.metric("lichen_ready") == 1.0
    assert replica.client.get("/ping").json() == {"loaded": True}


def test_a_failing_setup_exits_non_zero_with_the_error_logged(serve_factory: Callable[..., Replica]) -> None:
    replica = serve_factory("slow_setup_service:BrokenSetup", wait_healthy=False)
    assert replica.wait_exit() == 1
    failures = [r for r in replica.logs() if r["event"] == "setup_failed"]
    assert failures and failures[0]["error"].startswith("RuntimeError: model file missing") and failures[0]["level"] == "error"
    assert "Traceback" in failures[0]["traceback"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_drains_in_flight_requests_and_refuses_new_ones(
    serve_factory: Callable[..., Replica], sig: signal.Signals
) -> None:
    replica = serve_factory("echo_service:Echo", "--grace-s", "30", "--drain-s", "5")
    wait_until(lambda: replica.answers("/readyz") == 200, "ready")
    thread, box = in_background(lambda: httpx.post(replica.url("/hold"), params={"gate": "drain"}, timeout=60))
    wait_until(lambda: replica.metric("lichen_inflight_requests", endpoint="/hold") == 1.0, "the request in flight")

    replica.process.send_signal(sig)
    if sig == signal.SIGTERM:
        # the drain window: not ready at once, yet a request on a new connection is still served
        wait_until(lambda: replica.answers("/readyz") == 503, "readiness to turn false")
        late = httpx.post(replica.url("/echo"), json={"text": "late"}, timeout=10)
        assert late.status_code == 200 and late.json()["echoed"] == "late"
    wait_until(lambda: replica.answers("/healthz") is None, "new connections to be refused")  # Ctrl+C: at once
    assert replica.process.poll() is None  # still draining the in-flight request
    replica.open_gate("drain")
    thread.join(timeout=60)
    assert box and box[0].status_code == 200 and box[0].json() == {"released": True}
    assert replica.wait_exit() == 0
    events = {r["event"]: r for r in replica.logs()}
    assert "teardown_finished" in events and events["replica_stopping"]["signal"] == sig.name
    assert events["replica_stopping"]["drain_s"] == (5 if sig == signal.SIGTERM else 0)
    assert events["replica_stopped"]["exit_code"] == 0


def test_a_plain_asgi_app_gets_the_same_wrappers(serve_factory: Callable[..., Replica]) -> None:
    replica = serve_factory("plain_asgi:app")
    wait_until(lambda: replica.answers("/readyz") == 200, "ready")
    response = replica.client.get("/hello/ada", headers={"X-Request-ID": "plain-1"})
    assert response.json() == {"hello": "ada", "lifespan_ran": True}  # its own lifespan ran
    assert response.headers["x-request-id"] == "plain-1"
    assert replica.metric("lichen_requests_total", endpoint="/hello/{name}", method="GET", status="200") == 1.0
    assert replica.client.get("/nope").status_code == 404
    assert replica.metric("lichen_requests_total", endpoint="other", method="GET", status="404") == 1.0
    assert "/hello/{name}" in replica.client.get("/openapi.json").json()["paths"]
    listing = replica.client.get("/.well-known/lichen").json()
    assert listing["kind"] == "asgi" and {"path": "/hello/{name}", "method": "GET"}.items() <= listing["endpoints"][0].items()
    replica.process.send_signal(signal.SIGTERM)
    assert replica.wait_exit() == 0


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("nomodule:Thing", "no module named 'nomodule'"),
        ("slow_setup_service:not_a_service", "is an int, not a lichen Service subclass or an ASGI app"),
    ],  # the other kinds of bad target are covered in-process by tests/unit/sdk/test_sdk_loading.py
)
def test_a_bad_target_is_one_clear_line(target: str, expected: str) -> None:
    import subprocess

    from sdk_replicas import APPS, LICHEN

    result = subprocess.run(
        [*LICHEN, "serve", target, "--port", "1", "--app-dir", str(APPS)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    error_lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(error_lines) == 1 and expected in error_lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_a_taken_port_is_one_clear_line() -> None:
    import socket
    import subprocess

    from sdk_replicas import APPS, LICHEN

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*LICHEN, "serve", "echo_service:Echo", "--port", str(port), "--app-dir", str(APPS)],
            capture_output=True, text=True, timeout=60,
        )
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "Traceback" not in result.stderr
