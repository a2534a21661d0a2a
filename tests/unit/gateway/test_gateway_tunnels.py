"""The WebSocket tunnel's own bookkeeping, on a real event loop and the real httptools parser: bytes a replica
sends behind its 101 before the tunnel is piped, and the count of upgrades being opened on every way out."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from lichen.gateway.flow_control import FlowControl
from lichen.gateway.metrics import GatewayMetrics
from lichen.gateway.responses import Responder
from lichen.gateway.tunnels import MAX_EARLY_BYTES, TunnelUpstream, WebSockets
from lichen.spec.gateways import WebSocketSpec

HEAD_101 = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")


class Transport:
    def __init__(self) -> None:
        self.written = b""
        self.closed = False
        self.paused = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


def test_bytes_behind_the_101_in_later_reads_wait_for_the_pipe() -> None:
    async def scenario() -> tuple[TunnelUpstream, Transport]:
        upstream = TunnelUpstream(asyncio.get_running_loop())
        transport = Transport()
        upstream.connection_made(transport)
        upstream.data_received(HEAD_101 + b"\x81\x02hi")  # the head and a frame in one read
        upstream.data_received(b"\x81\x07welcome")  # and one more read before the tunnel is piped
        upstream.data_received(b"\x81\x03bye")
        return upstream, transport

    upstream, transport = asyncio.run(scenario())
    assert upstream.head.result() == 101 and not transport.closed  # not parsed as HTTP: no error, no close
    assert upstream.tail == b"\x81\x02hi\x81\x07welcome\x81\x03bye"  # in order, for the client before anything
    assert not transport.paused


def test_early_bytes_past_the_bound_stop_reading_the_replica() -> None:
    async def scenario() -> Transport:
        upstream = TunnelUpstream(asyncio.get_running_loop())
        transport = Transport()
        upstream.connection_made(transport)
        upstream.data_received(HEAD_101)
        upstream.data_received(b"x" * (MAX_EARLY_BYTES + 1))
        return transport

    transport = asyncio.run(scenario())
    assert transport.paused and not transport.closed


def _relay(websockets: WebSockets, service: Any, client: Transport) -> Any:
    responder = Responder(FlowControl(client), "127.0.0.1")
    return websockets.relay(SimpleNamespace(), responder, service, b"GET / HTTP/1.1\r\n\r\n", None, None,
                            websockets.loop.time() + 5, 1.0, 2, "rid", lambda status, revision: None)


def test_upgrades_with_no_ready_replica_give_their_place_back() -> None:
    nobody = SimpleNamespace(name="gone", pick=lambda *args: None)

    async def scenario() -> tuple[WebSockets, list[bytes]]:
        websockets = WebSockets(asyncio.get_running_loop(), GatewayMetrics(), WebSocketSpec(max_connections=2))
        answers = []
        for _ in range(5):
            assert websockets.admit("gone") is None
            client = Transport()
            await _relay(websockets, nobody, client)
            answers.append(client.written.split(b"\r\n", 1)[0])
        return websockets, answers

    websockets, answers = asyncio.run(scenario())
    assert answers == [b"HTTP/1.1 503 Service Unavailable"] * 5
    assert websockets.opening == 0 and not websockets.tunnels


def test_an_upgrade_cancelled_while_connecting_gives_its_place_back() -> None:
    class Hanging(WebSockets):
        async def _connect(self, *args: Any) -> Any:
            await asyncio.get_running_loop().create_future()  # a replica that never answers the connect

    async def scenario() -> tuple[int, int]:
        websockets = Hanging(asyncio.get_running_loop(), GatewayMetrics(), WebSocketSpec(max_connections=1))
        task = asyncio.ensure_future(_relay(websockets, SimpleNamespace(name="slow"), Transport()))
        await asyncio.sleep(0)  # let it start connecting
        during = websockets.opening
        task.cancel()  # the client went away (connection_lost cancels the handler)
        await asyncio.gather(task, return_exceptions=True)
        return during, websockets.opening

    during, after = asyncio.run(scenario())
    assert (during, after) == (1, 0)
