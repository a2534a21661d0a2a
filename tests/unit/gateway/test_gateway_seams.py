"""The gateway's seams in-process: the protocol hands a handler a request and a responder, and back-pressure
is one object per connection. No sockets: a fake transport records what would be sent."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from lichen.gateway.flow_control import FlowControl
from lichen.gateway.guarding import RateLimits, authenticate, release_slot, shed, take_slot, wait_for_slot
from lichen.gateway.metrics import GatewayMetrics
from lichen.gateway.responses import Denial, Responder
from lichen.gateway.requests import Request, RequestBody
from lichen.gateway.serving import ClientConnection, ConnectionLimits
from lichen.gateway.tables import ServiceRuntime
from lichen.spec.models import AdmissionSpec, AuthSpec, RateLimitSpec


class FakeTransport:
    def __init__(self) -> None:
        self.sent = bytearray()
        self.reading = True
        self.closed = False
        self.eof = False

    def write(self, data: bytes) -> None:
        self.sent += data

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def close(self) -> None:
        self.closed = True

    def write_eof(self) -> None:
        self.eof = True

    def get_extra_info(self, name: str) -> Any:
        return ("10.0.0.7", 5555) if name == "peername" else None


class FakeFront:
    """Records what the protocol hands over; answers with whatever the test's ``answer`` does."""

    def __init__(self, answer: Any = None) -> None:
        self.limits = ConnectionLimits(max_header_bytes=1024, max_body_bytes=100)
        self.handled: list[tuple[Request, Responder]] = []
        self.refused: list[Denial] = []
        self.answer = answer

    async def handle(self, request: Request, responder: Responder) -> None:
        self.handled.append((request, responder))
        if self.answer is not None:
            await self.answer(request, responder)

    def refuse(self, responder: Responder, request: Request | None, denial: Denial, request_id: str = "") -> None:
        self.refused.append(denial)
        responder.refuse(denial, request_id)

    def log_exception(self, message: str, exc: BaseException | None) -> None:
        raise AssertionError(f"{message}: {exc!r}")


def connect(front: FakeFront) -> tuple[ClientConnection, FakeTransport]:
    conn = ClientConnection(front, set(), asyncio.get_running_loop())
    transport = FakeTransport()
    conn.connection_made(transport)
    return conn, transport


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_the_protocol_hands_the_handler_a_request_and_a_responder_and_keeps_the_connection() -> None:
    async def answer(request: Request, responder: Responder) -> None:
        assert request.method == "POST" and request.url == b"/v1/x?a=1" and request.body.done
        assert request.body.chunks == [b"hi"] and responder.client_ip == "10.0.0.7"
        responder.start(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        responder.finish(b"ok")

    async def scenario() -> None:
        front = FakeFront(answer)
        conn, transport = connect(front)
        conn.data_received(b"POST /v1/x?a=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi")
        await settle()
        assert transport.sent.endswith(b"\r\n\r\nok") and not transport.eof and len(front.handled) == 1
        conn.data_received(b"GET /again HTTP/1.1\r\nHost: a\r\n\r\n")  # kept alive: the next request is served
        await settle()
        assert len(front.handled) == 2

    asyncio.run(scenario())


def test_a_response_cut_short_ends_with_the_connection() -> None:
    async def answer(request: Request, responder: Responder) -> None:
        responder.start(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf")  # never finished

    async def scenario() -> None:
        conn, transport = connect(FakeFront(answer))
        conn.data_received(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        await settle()
        assert transport.eof  # lingering close: FIN after what was sent

    asyncio.run(scenario())


@pytest.mark.parametrize(("raw", "status"), [
    (b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"x" * 2000 + b"\r\n\r\n", 431),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 500\r\n\r\n", 413),
    (b"NOT HTTP AT ALL\r\n\r\n", 400),
])
def test_the_protocol_refuses_through_the_front_and_closes(raw: bytes, status: int) -> None:
    async def scenario() -> None:
        front = FakeFront()
        conn, transport = connect(front)
        conn.data_received(raw)
        await settle()
        assert [d.status for d in front.refused] == [status] and not front.handled
        assert transport.sent.startswith(b"HTTP/1.1 %d " % status) and b"connection: close" in transport.sent
        assert transport.eof

    asyncio.run(scenario())


def test_responder_states_and_refusals() -> None:
    transport = FakeTransport()
    responder = Responder(FlowControl(transport), "1.2.3.4")
    responder.refuse(Denial(429, "rate_limited_ip", "rate limit exceeded", ((b"retry-after", b"2"),)), "rid-1")
    assert responder.started and responder.finished and not responder.close_after
    assert b"retry-after: 2\r\n" in transport.sent and b'"request_id": "rid-1"' in transport.sent
    closing = Responder(FlowControl(FakeTransport()), "1.2.3.4")
    closing.refuse(Denial(400, "malformed_request", "bad"), "")
    assert closing.close_after
    gone = FlowControl(FakeTransport())
    gone.closed = True
    quiet = Responder(gone, "")
    quiet.start(b"head")
    assert quiet.started and gone.transport.sent == b""  # a client that left gets nothing written


def test_flow_control_couples_the_two_sides_of_a_proxied_request() -> None:
    client, upstream = FlowControl(FakeTransport()), FlowControl(FakeTransport())
    client.feed_from(upstream)  # the response flows upstream -> client
    client.pause_writing()  # the client reads slowly
    assert not upstream.transport.reading and upstream.reading_paused
    client.resume_writing()
    assert upstream.transport.reading
    client.pause_writing()
    client.feed_from(None)  # the response ended: uncoupled, the owner decides when the replica is read again
    client.resume_writing()
    assert upstream.reading_paused
    upstream.resume_reading()
    other = FlowControl(FakeTransport())
    client.pause_writing()
    client.feed_from(other)  # coupled while already full: paused at once
    assert other.reading_paused


class RecordingSink:
    def __init__(self) -> None:
        self.seen: list[object] = []

    def write(self, chunk: bytes) -> None:
        self.seen.append(chunk)

    def end(self) -> None:
        self.seen.append("end")

    def abort(self) -> None:
        self.seen.append("abort")


def test_request_body_buffers_until_a_sink_attaches_then_forwards_and_keeps_a_replay_copy() -> None:
    body = RequestBody()
    body.feed(b"a" * 10)
    assert body.chunks == [b"a" * 10] and body.replayable
    sink = RecordingSink()
    body.attach(sink)
    body.feed(b"b")
    body.finish()
    assert sink.seen == [b"b", "end"] and body.chunks == [b"a" * 10, b"b"] and body.done
    body.fail(413)
    assert sink.seen[-1] == "abort" and body.error == 413
    big = RequestBody()
    big.feed(b"x" * (RequestBody.REPLAY_LIMIT + 1))
    assert not big.replayable and len(big.chunks) == 1  # kept: nothing was sent yet
    big.attach(RecordingSink())
    assert big.chunks == []  # written once by the caller before attaching; never replayed


def test_guards_return_a_denial_or_none() -> None:
    metrics = GatewayMetrics()
    limits = RateLimits(RateLimitSpec(per_ip_rps=1, burst=2), metrics)
    verdicts = [limits.check(None, "1.1.1.1", 100.0) for _ in range(3)]
    assert verdicts[:2] == [None, None] and verdicts[2] is not None and verdicts[2].status == 429
    assert verdicts[2].headers == ((b"retry-after", b"1"),) and limits.check(None, "2.2.2.2", 100.0) is None

    class Keys:
        def verify(self, credential: str, path: str, now: float) -> tuple[None, str]:
            return None, "invalid_key"

    from lichen.gateway.authenticating import Authenticator

    auth = Authenticator(AuthSpec(api_keys=True), Keys(), None)  # type: ignore[arg-type]
    request = Request()
    denial, principal = authenticate(auth, request, "/v1", 0.0)
    assert denial is not None and denial.status == 401 and denial.reason == "missing_credentials"
    assert denial.headers == ((b"www-authenticate", b'Bearer realm="lichen"'),) and principal is None
    open_auth = Authenticator(AuthSpec(), Keys(), None)  # type: ignore[arg-type]
    assert authenticate(open_auth, request, "/v1", 0.0) == (None, None)


def test_admission_takes_a_slot_queues_then_hands_the_slot_over_or_sheds() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        runtime, spec = ServiceRuntime(), AdmissionSpec(queue_size=1, queue_timeout_s=5)
        assert take_slot(runtime, 1, spec) is True and runtime.inflight == 1
        assert take_slot(runtime, 1, spec) is None  # at the limit, room in the queue: wait
        waiting = asyncio.create_task(wait_for_slot(runtime, spec, loop))
        await settle()
        assert len(runtime.waiters) == 1
        assert take_slot(runtime, 1, spec) is False  # queue full: shed at once
        assert shed(runtime, 1, spec).status == 503
        release_slot(runtime)  # the first request finishes: its slot goes to the waiter
        assert await waiting and runtime.inflight == 1
        release_slot(runtime)
        assert runtime.inflight == 0

    asyncio.run(scenario())
