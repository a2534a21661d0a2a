"""WebSocket passthrough with a real client (the `websockets` package) through a real gateway to a replica that
speaks WebSocket (uvicorn): echo over TLS and plaintext, a replica's refusal, the idle timeout, the connection
limit (503) and upgrades refused for want of a replica giving their place back, a replica (on bare sockets) that
greets the client with a large frame right behind its 101, and the metrics."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop
from gateway_harness import LICHEN, GatewayProcess, WsBackend, free_port, wait_until
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

pytestmark = pytest.mark.slow
IDLE_S = 1.5


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("ws")
    made = json.loads(subprocess.run([*LICHEN, "certs", "dev", str(tmp), "--out", str(tmp / "certs"), "--ca-dir",
                                      str(tmp / "ca"), "--hosts", "localhost", "--json"],
                                     capture_output=True, text=True, timeout=60, check=True).stdout)
    backend = WsBackend("w1", tmp)
    gateway = GatewayProcess({
        "routes": [{"prefix": "/chat", "service": "chat", "strip_prefix": True}],
        "services": {"chat": {"endpoints": [{"url": f"http://127.0.0.1:{backend.port}", "replica": "w1"}],
                              "discover_idempotent": False}},
        "internal_port": 0,
        "settings": {"tls": {"cert_file": "certs/dev.crt", "key_file": "certs/dev.key"},
                     "websockets": {"idle_timeout_s": IDLE_S, "max_connections": 2}},
    }, tmp)
    try:
        yield {"gateway": gateway, "ssl": ssl.create_default_context(cafile=made["ca_cert"]), "backend": backend}
    finally:
        gateway.stop()
        backend.stop()


def wss(site: dict, path: str) -> str:
    return f"wss://localhost:{site['gateway'].port}{path}"


def test_echo_through_tls_and_the_plaintext_listener(site) -> None:
    gateway = site["gateway"]
    before = gateway.metric("lichen_gateway_websocket_upgrades_total", service="chat", outcome="upgraded")

    async def talk() -> tuple[dict, list]:
        async with connect(wss(site, "/chat/hello?room=7"), ssl=site["ssl"], subprotocols=["chat.v1"]) as ws:
            hello = json.loads(await ws.recv())
            assert ws.subprotocol == "chat.v1"  # negotiated end to end
            echoed = []
            for message in ("hi", b"\x00\xff" * 70000, "x" * 5):  # a 140 kB binary frame among text ones
                await ws.send(message)
                echoed.append(await ws.recv())
            assert echoed == ["hi", b"\x00\xff" * 70000, "x" * 5]
        async with connect(gateway.internal_url.replace("http", "ws") + "/chat/echo") as ws:
            await ws.send("plain")
            echoed.append(await ws.recv())
        return hello, echoed

    hello, echoed = asyncio.run(talk())
    assert hello == {"replica": "w1", "path": "/hello", "query": "room=7", "forwarded_proto": "https",
                     "forwarded_for": "127.0.0.1"}
    assert echoed[-1] == "plain"
    wait_until(lambda: gateway.metric("lichen_gateway_websocket_upgrades_total", service="chat",
                                      outcome="upgraded") == before + 2, "two upgrades counted", 10)
    wait_until(lambda: gateway.metric("lichen_gateway_websocket_connections", service="chat") == 0, "all closed", 10)


def test_a_replica_refusing_the_handshake_is_relayed(site) -> None:
    async def refused() -> int:
        try:
            async with connect(wss(site, "/chat/refuse"), ssl=site["ssl"]):
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    assert asyncio.run(refused()) == 403
    assert site["gateway"].metric("lichen_gateway_websocket_upgrades_total", service="chat", outcome="rejected") >= 1


def test_an_idle_websocket_is_closed_and_an_active_one_is_not(site) -> None:
    gateway = site["gateway"]
    before = gateway.metric("lichen_gateway_websocket_closed_total", service="chat", reason="idle_timeout")

    async def scenario() -> tuple[bool, int]:
        async with connect(wss(site, "/chat/echo"), ssl=site["ssl"], ping_interval=None) as active, \
                connect(wss(site, "/chat/echo"), ssl=site["ssl"], ping_interval=None) as idle:
            exchanged = 0
            until = time.monotonic() + 2 * IDLE_S
            while time.monotonic() < until:  # talk on one for two idle timeouts, a message every ~0.1 s
                await active.send("tick")
                assert await asyncio.wait_for(active.recv(), 5) == "tick"
                exchanged += 1
                await asyncio.sleep(0.1)  # pacing the client, not a wait for a condition
            try:
                await asyncio.wait_for(idle.recv(), 10)  # the quiet one: closed by the gateway meanwhile
                closed = False
            except ConnectionClosed:
                closed = True
            await active.send("still open")
            assert await active.recv() == "still open"
            return closed, exchanged

    closed, exchanged = asyncio.run(scenario())
    assert closed and exchanged > 10
    wait_until(lambda: gateway.metric("lichen_gateway_websocket_closed_total", service="chat",
                                      reason="idle_timeout") == before + 1, "exactly the idle one closed", 10)


def test_the_connection_limit_answers_503_before_upgrading(site) -> None:
    gateway = site["gateway"]
    before = gateway.metric("lichen_gateway_websocket_upgrades_total", service="chat", outcome="limit")

    async def scenario() -> tuple[int, str]:
        async with connect(wss(site, "/chat/echo"), ssl=site["ssl"]) as first, \
                connect(wss(site, "/chat/echo"), ssl=site["ssl"]):
            try:
                async with connect(wss(site, "/chat/echo"), ssl=site["ssl"]):
                    status = 101
            except InvalidStatus as exc:
                status, retry_after = exc.response.status_code, exc.response.headers.get("retry-after", "")
            await first.close()
        # both closed: a new one is let in again (the gateway notices the close as the client's)
        for _ in range(50):
            try:
                async with connect(wss(site, "/chat/echo"), ssl=site["ssl"]) as again:
                    await again.send("back")
                    return status, retry_after if await again.recv() == "back" else "no echo"
            except InvalidStatus:
                await asyncio.sleep(0.1)  # the gateway counts the closes as they arrive: ask again
        return status, "never let in again"

    status, retry_after = asyncio.run(scenario())
    assert status == 503 and retry_after == "1"
    assert gateway.metric("lichen_gateway_websocket_upgrades_total", service="chat", outcome="limit") == before + 1
    assert gateway.metric("lichen_gateway_denied_total", reason="websocket_limit") >= 1


def test_stopping_the_gateway_closes_websockets_at_once(tmp_path: Path, site) -> None:
    backend = site["backend"]
    gateway = GatewayProcess({"routes": [{"prefix": "/", "service": "chat"}],
                              "services": {"chat": {"endpoints": [{"url": f"http://127.0.0.1:{backend.port}"}],
                                                    "discover_idempotent": False}}}, tmp_path)

    async def scenario() -> float:
        async with connect(f"ws://127.0.0.1:{gateway.port}/echo") as ws:
            await ws.send("x")
            await ws.recv()
            began = time.monotonic()
            os.kill(gateway.process.pid, signal.SIGTERM)
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 8)  # before the 10 s request drain would end
            return time.monotonic() - began

    try:
        asyncio.run(scenario())
        assert gateway.process.wait(timeout=15) == 0
    finally:
        gateway.stop()




def test_upgrades_refused_for_want_of_a_replica_never_use_up_the_limit(tmp_path: Path, site) -> None:
    backend = site["backend"]
    gateway = GatewayProcess({
        "routes": [{"prefix": "/gone", "service": "gone"}, {"prefix": "/", "service": "chat"}],
        "services": {"gone": {"endpoints": [{"url": f"http://127.0.0.1:{free_port()}", "ready": False}],
                              "discover_idempotent": False},
                     "chat": {"endpoints": [{"url": f"http://127.0.0.1:{backend.port}"}], "discover_idempotent": False}},
        "settings": {"websockets": {"max_connections": 2}},
    }, tmp_path)

    async def scenario() -> tuple[list[tuple[int, str]], list[str]]:
        refused = []
        for _ in range(5):  # more than max_connections: each must give its place back
            with pytest.raises(InvalidStatus) as caught:
                async with connect(f"ws://127.0.0.1:{gateway.port}/gone/echo"):
                    pass
            refused.append((caught.value.response.status_code, caught.value.response.body.decode()))
        async with connect(f"ws://127.0.0.1:{gateway.port}/echo") as one, \
                connect(f"ws://127.0.0.1:{gateway.port}/echo") as two:  # the limit's two places, both free
            await one.send("a")
            await two.send("b")
            return refused, [await one.recv(), await two.recv()]

    try:
        refused, echoed = asyncio.run(scenario())
        assert [status for status, _ in refused] == [503] * 5
        assert all("no ready upstream" in body for _, body in refused), refused
        assert echoed == ["a", "b"]
        assert gateway.metric("lichen_gateway_denied_total", reason="websocket_limit") == 0
        assert gateway.metric("lichen_gateway_websocket_upgrades_total", service="gone", outcome="error") == 5
    finally:
        gateway.stop()


WELCOME = b"welcome" + b"." * 600_000
"""the greeting of the replica below: more than the gateway takes in one read (its receive window, ~128 kB), so
the rest arrives in further reads, while the gateway is still switching the tunnel"""


class GreetingBackend(asyncio.Protocol):
    """A replica on bare sockets, so the test decides how its bytes go out: it answers the upgrade with its ``101``
    and greets the client at once with one large frame, in the same write (``together``) or in a write of its own
    one loop pass later (``next_pass``). It answers a client's close frame with its own and hangs up."""

    def __init__(self, mode: str, greeted: list[int]) -> None:
        self.mode, self.greeted = mode, greeted
        self.transport: Any = None
        self.head = b""
        self.switched = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.switched:
            if data[0] & 0x0F == 0x8:  # the client's close frame: answer it, then hang up
                self.transport.write(b"\x88\x02\x03\xe8")
                self.transport.close()
            return
        self.head += data
        if b"\r\n\r\n" not in self.head:
            return
        self.switched = True
        key = next(line.split(b":", 1)[1].strip() for line in self.head.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))
        accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        head = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        frame = b"\x82\x7f" + len(WELCOME).to_bytes(8, "big") + WELCOME  # binary, 64-bit length
        if self.mode == "together":
            self.transport.write(head + frame)
        else:
            self.transport.write(head)
            asyncio.get_running_loop().call_soon(self.transport.write, frame)
        self.greeted.append(1)


@pytest.mark.parametrize("mode", ["together", "next_pass"])
def test_a_frame_the_replica_sends_right_after_its_101_reaches_the_client(tmp_path: Path, mode: str) -> None:
    port = free_port()
    gateway = GatewayProcess({"routes": [{"prefix": "/", "service": "greeter"}],
                              "services": {"greeter": {"endpoints": [{"url": f"http://127.0.0.1:{port}"}],
                                                       "discover_idempotent": False}}}, tmp_path)
    greeted: list[int] = []

    async def scenario() -> list[bool]:
        server = await asyncio.get_running_loop().create_server(lambda: GreetingBackend(mode, greeted),
                                                                 "127.0.0.1", port)
        received = []
        try:
            for _ in range(10):  # every time, not by luck of how the reads fall
                async with connect(f"ws://127.0.0.1:{gateway.port}/greet", open_timeout=10, close_timeout=5,
                                   max_size=None) as ws:
                    received.append(await asyncio.wait_for(ws.recv(), 10) == WELCOME)
        finally:
            server.close()
        return received

    try:
        assert uvloop.run(scenario()) == [True] * 10  # the gateway runs uvloop too (lichen gateway)
        assert len(greeted) == 10
        assert gateway.metric("lichen_gateway_websocket_upgrades_total", service="greeter", outcome="upgraded") == 10
        wait_until(lambda: gateway.metric("lichen_gateway_websocket_closed_total", service="greeter") == 10,
                   "every tunnel closed", 10)
    finally:
        gateway.stop()
