"""One request's walk through the gateway enters each module in one direction.

The request path is traced with ``sys.setprofile`` while an in-process
gateway proxies a POST whose body arrives in two pieces to a loopback replica
that streams its answer. Every call from one ``lichen.gateway`` module into
another is recorded; calls may only go "downstream" in the order below
(the protocol, then the handler, then what it uses), and nothing calls back
into the handler: ``proxying`` is entered only by the event loop running its
task. Before the protocol/handler seam, one request entered ``proxying`` 11
times from ``serving`` and ``upstreams``.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from lichen.gateway.configs import GatewayConfig
from lichen.gateway.proxying import Gateway
from lichen.gateway.serving import ClientConnection

DOWNSTREAM = ["serving", "proxying", "guarding", "authenticating", "keys", "tables", "metrics", "requests",
              "upstreams", "responses", "flow_control", "configs"]
RANK = {f"lichen.gateway.{name}": rank for rank, name in enumerate(DOWNSTREAM)}


class ClientTransport:
    def __init__(self) -> None:
        self.sent = bytearray()

    def write(self, data: bytes) -> None:
        self.sent += data

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def write_eof(self) -> None: ...

    def close(self) -> None: ...

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else None


async def wait_for(condition: Any) -> None:
    while not condition():
        await asyncio.sleep(0)


def test_a_proxied_request_calls_through_the_gateway_modules_in_one_direction(tmp_path: Path) -> None:
    edges: dict[tuple[str, str], int] = {}

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event != "call" or frame.f_back is None:
            return
        callee, caller = frame.f_globals.get("__name__", ""), frame.f_back.f_globals.get("__name__", "")
        if callee != caller and callee in RANK and caller in RANK:
            edges[(caller, callee)] = edges.get((caller, callee), 0) + 1

    async def scenario() -> bytes:
        received = bytearray()
        second_half_sent = asyncio.Event()

        async def replica(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await reader.readuntil(b"\r\n\r\n")
            received.extend(head)
            received.extend(await reader.readexactly(5))
            received.extend(await reader.readexactly(5))
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                         b"6\r\ndata: \r\n")
            await writer.drain()
            await second_half_sent.wait()
            writer.write(b"5\r\nhello\r\n0\r\n\r\n")
            await writer.drain()

        server = await asyncio.start_server(replica, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        config = GatewayConfig.model_validate({
            "routes": [{"prefix": "/api", "service": "b", "strip_prefix": True}],
            "services": {"b": {"endpoints": [{"url": f"http://127.0.0.1:{port}"}]}},
            "keys_db": str(tmp_path / "keys.db"),
        })
        gateway = Gateway(config, loop, base_dir=tmp_path)
        client = ClientTransport()
        conn = ClientConnection(gateway, gateway.connections, loop)
        conn.connection_made(client)
        sys.setprofile(profile)
        try:
            conn.data_received(b"POST /api/echo HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n01234")
            await wait_for(lambda: b"01234" in received)  # the replica has the first half: the rest streams
            conn.data_received(b"56789")
            await wait_for(lambda: b"data: " in client.sent)
            second_half_sent.set()
            await wait_for(lambda: client.sent.endswith(b"0\r\n\r\n"))
        finally:
            sys.setprofile(None)
            server.close()
        assert received.endswith(b"0123456789")
        return bytes(client.sent)

    sent = asyncio.run(scenario())
    assert sent.startswith(b"HTTP/1.1 200 OK\r\n") and b"hello" in sent
    backwards = {edge: n for edge, n in edges.items() if RANK[edge[0]] >= RANK[edge[1]]}
    assert backwards == {}, f"calls against the request's direction: {backwards}"
    assert not [edge for edge in edges if edge[1] == "lichen.gateway.proxying"], edges
    # the seams are used: the protocol builds the request and responder, the body streams to the replica's writer,
    # the replica's chunks go to the client through the responder
    for edge in [("serving", "requests"), ("serving", "responses"), ("proxying", "guarding"), ("proxying", "upstreams"),
                 ("requests", "upstreams"), ("upstreams", "responses")]:
        assert (f"lichen.gateway.{edge[0]}", f"lichen.gateway.{edge[1]}") in edges, (edge, sorted(edges))
