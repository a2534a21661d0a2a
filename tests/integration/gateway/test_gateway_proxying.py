"""The gateway with real processes: balancing, failover, ejection, SSE, live reload, admission, splitting."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gateway_harness import Backend, GatewayProcess, LoadGenerator, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Backend]]:
    tmp = tmp_path_factory.mktemp("backends")
    started = [Backend(name, tmp) for name in ("r1", "r2", "r3")]
    try:
        yield [b.wait() for b in started]
    finally:
        for backend in started:
            backend.kill()


@pytest.fixture
def gateways(tmp_path: Path) -> Iterator[list[GatewayProcess]]:
    started: list[GatewayProcess] = []
    yield started
    for gateway in started:
        gateway.stop()


def start(gateways: list[GatewayProcess], tmp: Path, backends: list[Backend], settings: dict | None = None,
          **service: object) -> GatewayProcess:
    config = {
        "settings": settings or {},
        "routes": [{"prefix": "/api", "service": "b", "strip_prefix": True}],
        "services": {"b": {"endpoints": [b.endpoint() for b in backends], **service}},
    }
    gateway = GatewayProcess(config, tmp)
    gateways.append(gateway)
    return gateway


def test_p2c_sends_few_requests_to_a_slow_replica(backends, gateways, tmp_path) -> None:
    slow = Backend("slow", tmp_path, env={"DELAY_MS": "100"}).wait()  # whoami answers after 100 ms
    try:
        gateway = start(gateways, tmp_path, [*backends, slow])
        with LoadGenerator(f"{gateway.url}/api/whoami", threads=4) as load:
            wait_until(lambda: load.total >= 600, "600 requests", 60)
    finally:
        slow.kill()
    assert not load.errors and set(load.statuses) == {200}, (load.statuses, load.errors[:3])
    total = sum(load.replicas.values())
    # Four replicas, fair share 25 %. Round robin sends exactly 25 % to the slow one and random about
    # 25 % (+-2 % at 600 requests), whatever its latency. p2c picks it only when it has no more
    # outstanding requests than the other candidate; it holds each request 100 ms, the others a few.
    assert load.replicas["slow"] < 0.10 * total, load.replicas
    for fast in ("r1", "r2", "r3"):  # and the fast ones share the rest: p2c still spreads
        assert load.replicas[fast] >= 0.20 * total, load.replicas


def test_round_robin_is_exact_and_hash_is_sticky(backends, gateways, tmp_path) -> None:
    rr = start(gateways, tmp_path, backends, settings={"balancer": "round_robin"})
    with httpx.Client() as client:
        seen = [client.get(f"{rr.url}/api/whoami").headers["x-replica"] for _ in range(9)]
    assert Counter(seen) == {"r1": 3, "r2": 3, "r3": 3}
    hashed = start(gateways, tmp_path, backends, settings={"balancer": "hash", "hash_on": "header:X-User-ID"})
    with httpx.Client() as client:
        owners = {}
        for user in range(30):
            replicas = {client.get(f"{hashed.url}/api/whoami", headers={"X-User-ID": f"u{user}"}).headers["x-replica"]
                        for _ in range(3)}
            assert len(replicas) == 1  # the same user always lands on the same replica
            owners[user] = replicas.pop()
    assert len(set(owners.values())) >= 2  # and users spread over replicas


def test_kill_9_a_replica_under_load_causes_no_client_error(gateways, tmp_path) -> None:
    victims = [Backend(name, tmp_path) for name in ("k1", "k2", "k3")]
    try:
        for backend in victims:
            backend.wait()
        gateway = start(gateways, tmp_path, victims)
        with LoadGenerator(f"{gateway.url}/api/slow?ms=5", threads=6) as load:
            wait_until(lambda: load.total >= 150, "traffic before the kill", 30)
            victims[0].kill()
            before = load.total
            wait_until(lambda: load.total >= before + 400, "traffic after the kill", 60)
        assert load.errors == [] and set(load.statuses) == {200}, (load.statuses, load.errors[:3])
        assert load.replicas["k2"] > 0 and load.replicas["k3"] > 0
        assert gateway.metric("lichen_gateway_upstream_attempts_total", outcome="connect_error") + gateway.metric(
            "lichen_gateway_upstream_attempts_total", outcome="reset") >= 1
    finally:
        for backend in victims:
            backend.kill()


def test_a_services_own_5xx_reaches_the_client_with_its_body_and_masking_replaces_it(gateways, tmp_path) -> None:
    """mask_upstream_errors false (the default): the replica's 503 and its body pass; true: the status stays, the body
    is the gateway's. Also when the retry budget ends the retries of a GET: the last answer is the service's."""
    own = Backend("own", tmp_path).wait()
    try:
        own.set_fail(503)
        default = start(gateways, tmp_path, [own], settings={"retries": {"attempts": 3, "budget_ratio": 0}})
        masked = start(gateways, tmp_path, [own], settings={"mask_upstream_errors": True})
        with httpx.Client(timeout=10.0) as client:
            posts = [client.post(f"{default.url}/api/once", content=b"{}", headers={"x-request-id": f"own-{i}"})
                     for i in range(3)]  # not idempotent: one try, answered as it is
            gets = [client.get(f"{default.url}/api/whoami") for _ in range(10)]  # retried while the budget lasts
            hidden = client.post(f"{masked.url}/api/once", content=b"{}", headers={"x-request-id": "own-m"})
        for response in posts + gets:
            assert response.status_code == 503, response.text
            assert response.json() == {"error": "internal detail: stack trace here"}
        assert [r.headers["x-request-id"] for r in posts] == ["own-0", "own-1", "own-2"]
        retries = default.metric("lichen_gateway_retries_total")
        assert 1 <= retries < 2 * len(gets)  # the budget (a floor of 1 retry/s) ran out: the service's answer came back
        assert hidden.status_code == 503 and "stack trace" not in hidden.text
        assert hidden.json()["error"] == "upstream error" and hidden.json()["request_id"] == "own-m"
        own.kill()  # a failure of the gateway's own making: its generic error, whatever the setting
        refused = httpx.post(f"{default.url}/api/once", content=b"{}", timeout=10.0)
        assert refused.status_code in (502, 503) and refused.json()["error"] in (
            "upstream unavailable", "no ready upstream for this service")
    finally:
        own.kill()


def test_replica_returning_500s_is_ejected_then_returns(backends, gateways, tmp_path) -> None:
    gateway = start(gateways, tmp_path, backends, settings={
        "balancer": "round_robin", "outlier_detection": {"consecutive_failures": 5, "base_ejection_s": 3},
        "mask_upstream_errors": True})
    bad = backends[1]
    bad.set_fail(500)
    try:
        with httpx.Client() as client:
            failing = [client.get(f"{gateway.url}/api/whoami") for _ in range(3)]
            masked = [r for r in failing if r.status_code == 500]
            assert masked and all("stack trace" not in r.text and r.json()["error"] == "upstream error" for r in masked)
            wait_until(lambda: gateway.metric("lichen_gateway_ejections_total", upstream=bad.replica) >= 1 or
                       client.get(f"{gateway.url}/api/whoami") is None, "ejection", 30)
            statuses = [client.get(f"{gateway.url}/api/whoami").status_code for _ in range(12)]
            assert statuses == [200] * 12  # while ejected, nothing reaches it
            bad.set_fail(0)
            back = wait_until(
                lambda: client.get(f"{gateway.url}/api/whoami").headers.get("x-replica") == bad.replica, "return", 30)
            assert back
    finally:
        bad.set_fail(0)


def test_503_from_a_replica_is_retried_elsewhere(backends, gateways, tmp_path) -> None:
    gateway = start(gateways, tmp_path, backends, settings={"outlier_detection": {"consecutive_failures": 1000},
                                                             "retries": {"budget_ratio": 0.5}})
    wait_until(lambda: "discovered_idempotent" in gateway.log_text(), "GET /.well-known/lichen discovery", 20)
    backends[0].set_fail(503)
    try:
        with httpx.Client() as client:
            statuses = Counter(client.get(f"{gateway.url}/api/whoami").status_code for _ in range(30))
            # POST /echo is marked idempotent by the service: retried; POST /once is not: its 503s reach the client
            echoes = Counter(client.post(f"{gateway.url}/api/echo", content=b"hi").status_code for _ in range(30))
            onces = Counter(client.post(f"{gateway.url}/api/once", content=b"hi").status_code for _ in range(30))
        assert statuses == {200: 30} and echoes == {200: 30}
        assert onces[503] >= 1 and onces[200] >= 1, onces
        retries = gateway.metric("lichen_gateway_retries_total", service="b")
        assert 1 <= retries <= 0.5 * 90 + 10  # within the budget: ratio x requests + the 1/s floor over 10 s
    finally:
        backends[0].set_fail(0)


def test_retry_budget_caps_extra_load_at_20_percent(backends, gateways, tmp_path) -> None:
    gateway = start(gateways, tmp_path, backends, settings={"outlier_detection": {"consecutive_failures": 1000},
                                                             "balancer": "round_robin"})
    backends[0].set_fail(503)
    began = time.monotonic()
    try:
        with httpx.Client() as client:
            statuses = Counter(client.get(f"{gateway.url}/api/whoami").status_code for _ in range(240))
    finally:
        backends[0].set_fail(0)
    elapsed_s = time.monotonic() - began
    retries = gateway.metric("lichen_gateway_retries_total", service="b")
    # A third of first attempts fail (~80 wanted retries); the budget allows 20 % of requests plus a floor of
    # 1 retry/s over the 10 s window (the window decays, so the floor also accrues over the elapsed time).
    assert retries <= 0.2 * 240 + 1.0 * (10 + elapsed_s)
    # Round robin sends a third of first attempts to the failing replica: those beyond the budget fail.
    assert statuses[503] >= 1 and statuses[503] + statuses[200] == 240, (statuses, retries)
    assert statuses[503] == pytest.approx(80 - retries, abs=8)


def test_sse_first_event_arrives_before_the_stream_ends(backends, gateways, tmp_path) -> None:
    gateway = start(gateways, tmp_path, backends)
    arrivals = []
    with httpx.stream("GET", f"{gateway.url}/api/sse?n=3&gap_ms=400", timeout=10) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data:"):
                arrivals.append(time.monotonic())
    assert len(arrivals) == 3
    assert arrivals[-1] - arrivals[0] >= 0.6  # events came as produced, not all at once at the end


def test_route_and_endpoint_changes_under_load_drop_nothing(backends, gateways, tmp_path) -> None:
    gateway = start(gateways, tmp_path, backends[:2])
    with LoadGenerator(f"{gateway.url}/api/whoami", threads=4) as load:
        wait_until(lambda: load.total >= 100, "traffic", 30)
        gateway.update(
            routes=[{"prefix": "/api", "service": "b", "strip_prefix": True},
                    {"prefix": "/v2", "service": "b", "strip_prefix": True}],
            services={"b": {"endpoints": [backends[1].endpoint(), backends[2].endpoint()]}},
        )
        wait_until(lambda: get_ok(f"{gateway.url}/v2/whoami"), "new route live", 20)
        seen_before = load.replicas["r3"]
        wait_until(lambda: load.replicas["r3"] > seen_before + 20, "new endpoint in use", 30)
    assert load.errors == [] and set(load.statuses) == {200}, (load.statuses, load.errors[:3])
    # A broken config is refused and the last good one keeps serving.
    gateway.config_path.write_text("{not json")
    wait_until(lambda: "reload_failed" in gateway.log_text(), "reload refused", 20)
    assert httpx.get(f"{gateway.url}/v2/whoami").status_code == 200


def get_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_route_timeout_gives_504_and_head_and_http10_work(backends, gateways, tmp_path) -> None:
    config = {
        "routes": [{"prefix": "/api", "service": "b", "strip_prefix": True},
                   {"prefix": "/quick", "service": "b", "strip_prefix": True, "timeout_s": 0.3}],
        "services": {"b": {"endpoints": [backends[0].endpoint()]}},
    }
    gateway = GatewayProcess(config, tmp_path)
    gateways.append(gateway)
    timed_out = httpx.get(f"{gateway.url}/quick/slow?ms=3000", timeout=10)
    assert timed_out.status_code == 504 and "127.0.0.1" not in timed_out.text
    assert httpx.get(f"{gateway.url}/api/slow?ms=400", timeout=10).status_code == 200
    head = httpx.head(f"{gateway.url}/api/whoami")
    assert head.status_code == 200 and head.content == b""
    assert httpx.get(f"{gateway.url}/api/whoami").status_code == 200  # the connection after HEAD is sane
    import socket

    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(b"GET /api/whoami HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200") and b'"replica":"r1"' in data and b"transfer-encoding" not in data.lower()


def test_admission_control_sheds_with_retry_after(backends, gateways, tmp_path) -> None:
    gateway = start(gateways, tmp_path, backends, settings={"admission": {"queue_size": 1, "queue_timeout_s": 0.2}},
                    max_inflight=2)
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: httpx.get(f"{gateway.url}/api/slow?ms=800", timeout=10), range(8)))
    statuses = Counter(r.status_code for r in responses)
    assert statuses[200] >= 2 and statuses[503] >= 1, statuses
    shed = [r for r in responses if r.status_code == 503]
    assert all(int(r.headers["retry-after"]) >= 1 for r in shed)
    assert gateway.metric("lichen_gateway_shed_total", service="b") == statuses[503]
    # Queued requests are handed the slot of a finishing request, in order: a short burst all succeeds.
    patient = start(gateways, tmp_path, backends, settings={"admission": {"queue_size": 4, "queue_timeout_s": 20}},
                    max_inflight=2)
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(httpx.get, f"{patient.url}/api/slow?ms=600", timeout=30) for _ in range(6)]
        # queued requests are demand too: the in-flight gauge the autoscaler reads counts more than max_inflight
        wait_until(lambda: patient.metric("lichen_gateway_inflight_requests", service="b") >= 3, "queued counted")
        burst = [f.result() for f in futures]
    assert [r.status_code for r in burst] == [200] * 6
    assert patient.metric("lichen_gateway_shed_total") == 0
    assert patient.metric("lichen_gateway_inflight_requests", service="b") == 0


def test_revision_weights_and_pinning(backends, gateways, tmp_path) -> None:
    config = {
        "routes": [{"prefix": "/api", "service": "b", "strip_prefix": True}],
        "services": {"b": {"endpoints": [backends[0].endpoint("v1"), backends[1].endpoint("v2")],
                           "revision_weights": {"v1": 100, "v2": 0}}},
    }
    gateway = GatewayProcess(config, tmp_path)
    gateways.append(gateway)
    with httpx.Client() as client:
        plain = Counter(client.get(f"{gateway.url}/api/whoami").headers["x-replica"] for _ in range(20))
        pinned = Counter(client.get(f"{gateway.url}/api/whoami", headers={"X-Lichen-Revision": "v2"}).headers["x-replica"]
                         for _ in range(10))
    assert plain == {"r1": 20} and pinned == {"r2": 10}
    assert gateway.metric("lichen_gateway_requests_total", revision="v2", status="200") == 10


def test_unknown_path_lists_routes_and_request_id_is_propagated(backends, gateways, tmp_path) -> None:
    gateway = start(gateways, tmp_path, backends)
    missing = httpx.get(f"{gateway.url}/nowhere")
    assert missing.status_code == 404 and missing.json()["routes"] == [{"prefix": "/api", "service": "b"}]
    assert gateway.metric("lichen_gateway_denied_total", reason="no_route") == 1
    response = httpx.get(f"{gateway.url}/api/whoami", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123" and response.headers["x-seen-request-id"] == "abc-123"
    generated = httpx.get(f"{gateway.url}/api/whoami")
    assert len(generated.headers["x-request-id"]) >= 16
    assert generated.headers["x-seen-request-id"] == generated.headers["x-request-id"]
    echoed = httpx.post(f"{gateway.url}/api/echo", content=b"x" * 200_000)
    assert echoed.status_code == 200 and echoed.content == b"x" * 200_000

    import socket

    body = b"y" * 300_000  # headers and a large body in one write: the raw header-size guard must not count the body
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(b"POST /api/echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%b"
                     % (len(body), body))
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200") and answer.split(b"\r\n\r\n", 1)[1].count(b"y") == len(body)

    def chunks():
        for i in range(5):
            yield b"part%d;" % i

    streamed = httpx.post(f"{gateway.url}/api/echo", content=chunks())
    assert streamed.content == b"part0;part1;part2;part3;part4;"


class HeadThenDie:
    """An upstream that sends a response head, then closes before the body is whole:
    a replica killed between writing its head and the end of its body."""

    HEADS = {
        "content-length": b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 20\r\n\r\n",
        # a chunked body cut after its first chunk, before the terminating 0-chunk
        "chunked": b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
                   b"5\r\n{\"a\":\r\n",
    }

    def __init__(self, framing: str = "content-length") -> None:
        self.response = self.HEADS[framing]
        import socket
        import threading

        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.hits = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                if data.startswith(b"GET /.well-known"):
                    conn.sendall(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    continue
                self.hits += 1
                conn.sendall(self.response)

    def endpoint(self) -> dict:
        return {"url": self.url, "replica": "dies", "revision": "default", "ready": True}


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_replica_dying_between_head_and_body_is_retried_not_truncated(backends, gateways, tmp_path,
                                                                       framing) -> None:
    dying = HeadThenDie(framing)
    config = {
        "settings": {"outlier_detection": {"consecutive_failures": 1000}, "retries": {"budget_ratio": 1.0},
                     "balancer": "round_robin"},
        "routes": [{"prefix": "/api", "service": "b", "strip_prefix": True}],
        "services": {"b": {"endpoints": [dying.endpoint(), backends[0].endpoint()]}},
    }
    gateway = GatewayProcess(config, tmp_path)
    gateways.append(gateway)
    try:
        with httpx.Client() as client:
            responses = [client.get(f"{gateway.url}/api/whoami") for _ in range(20)]
        assert [r.status_code for r in responses] == [200] * 20
        assert all(r.json()["replica"] == "r1" for r in responses)
        assert dying.hits >= 5  # round robin sent it its share; each was retried on r1
    finally:
        dying.sock.close()


def test_a_replicas_own_504_is_answered_not_retried(backends, gateways, tmp_path) -> None:
    gateway = start(gateways, tmp_path, backends[:2], settings={"outlier_detection": {"consecutive_failures": 1000},
                                                                 "retries": {"budget_ratio": 1.0}})
    backends[0].set_fail(504)  # the replica's endpoint timed out: its handler may still be running
    try:
        with httpx.Client() as client:
            statuses = Counter(client.get(f"{gateway.url}/api/whoami").status_code for _ in range(30))
        assert statuses[504] >= 1 and statuses[200] >= 1 and set(statuses) == {200, 504}, statuses
        assert gateway.metric("lichen_gateway_retries_total", service="b") == 0
    finally:
        backends[0].set_fail(0)


def test_sighup_reloads_at_once_and_the_served_generation_is_visible(backends, gateways, tmp_path) -> None:
    gateway = start(gateways, tmp_path, backends[:1])
    assert httpx.get(f"{gateway.url}/-/config").json() == {"generation": ""}
    gateway.update(reload_interval_s=60.0)  # picked up by the 0.2 s poll; from then on only SIGHUP is quick
    wait_until(lambda: gateway.log_events("reloaded"), "the 60 s poll interval to apply")
    gateway.update(generation="g-2", services={"b": {"endpoints": [b.endpoint() for b in backends[:2]]}})
    gateway.process.send_signal(signal.SIGHUP)
    wait_until(lambda: httpx.get(f"{gateway.url}/-/config").json() == {"generation": "g-2"}, "the SIGHUP reload", 5)
    replicas = {httpx.get(f"{gateway.url}/api/whoami").json()["replica"] for _ in range(40)}
    assert replicas == {"r1", "r2"}
    reloads = gateway.log_events("reloaded")
    assert gateway.process.poll() is None and [e.get("forced") for e in reloads] == [False, True]
    # the one log style: a timestamp, a level and the logger on every line, fields beside the event
    assert all(e["ts"].endswith("Z") and e["level"] == "info" and e["logger"] == "lichen.gateway" for e in reloads)
    assert reloads[-1]["generation"] == "g-2"


def test_a_replica_dropped_mid_request_is_neither_retried_nor_ejected(gateways, tmp_path) -> None:
    """A retry picks from the table being served, not the one the request started with; a replica that left
    the table (a planned stop) is not counted towards ejection."""
    gone, successor = Backend("gone", tmp_path).wait(), Backend("successor", tmp_path).wait()
    try:
        gateway = start(gateways, tmp_path, [gone], settings={"outlier_detection": {"consecutive_failures": 1}})
        box: list = []

        def slow_get() -> None:
            box.append(httpx.get(f"{gateway.url}/api/slow?ms=2000", timeout=30))

        thread = threading.Thread(target=slow_get, daemon=True)
        thread.start()
        wait_until(lambda: gateway.metric("lichen_gateway_inflight_requests", service="b") == 1, "the request at 'gone'")
        gateway.update(generation="g2", services={"b": {"endpoints": [successor.endpoint()]}})
        gateway.process.send_signal(signal.SIGHUP)
        wait_until(lambda: httpx.get(f"{gateway.url}/-/config").json() == {"generation": "g2"}, "the new table")
        gone.kill()  # the attempt in flight is reset: a GET may be retried, on the table now served
        thread.join(timeout=30)
        assert box and box[0].status_code == 200 and box[0].json()["replica"] == "successor", box
        assert gateway.metric("lichen_gateway_ejections_total") == 0
        assert gateway.metric("lichen_gateway_upstream_attempts_total", outcome="reset") == 1
    finally:
        gone.kill()
        successor.kill()
