"""A refused request is answered with its own status whatever names its query carries.

The gateway's ``request_denied`` line writes ``client_ip`` and ``reason`` itself. A redaction rule by one of those
names (or ``exc_info``, a keyword of the logging call) once made the line's logging call raise TypeError: a 401 or
404 became a 500, and a refusal of the parser (431) raised inside ``data_received`` and aborted the connection.
The config loader refuses such a rule now, and a plan built by hand leaves it out; here the plan is built by hand
(as from a config no validation saw), and once more with tokens by those names handed to the line whatever the plan
says, so the logging call itself is shown collision-proof. A real gateway on a loopback socket answers real
requests on one kept-alive connection.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from lichen.gateway.configs import GatewayConfig
from lichen.gateway.proxying import Gateway
from lichen.gateway.serving import ClientConnection
from lichen.logs import Event, active_redaction, set_redaction
from lichen.redacting import Hashed, Redaction

SALT = bytes(range(40, 72))
PLAN = Redaction((("hash", "query", "client_ip"), ("hash", "query", "exc_info"), ("hash", "header", "reason"),
                  ("hash", "query", "user_id")), SALT)
QUERY = "client_ip=6.6.6.6&exc_info=1&user_id=u-77"


class CollidingTokens(Redaction):
    """A plan whose request tokens include names the line writes itself (as a future source of tokens might)."""

    __slots__ = ()

    def request_fields(self, headers, query, body=None):  # type: ignore[no-untyped-def]
        names = ("client_ip", "reason", "exc_info", "status", "ts", "event")
        found = super().request_fields(headers, query, body) or {}
        return {**{name: Hashed("h_collides") for name in names}, **found}


@pytest.fixture(params=["hand-built plan", "colliding tokens"])
def plan(request: pytest.FixtureRequest):
    saved = active_redaction()
    built = PLAN if request.param == "hand-built plan" else CollidingTokens(PLAN.rules, SALT)
    set_redaction(built)
    yield built
    set_redaction(saved)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), 10)
    return int(lines[0].split()[1]), headers, body


def test_denials_keep_their_status_and_connection_when_a_token_is_named_like_a_line_field(
        tmp_path: Path, plan: Redaction, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> list[int]:
        loop = asyncio.get_running_loop()
        config = GatewayConfig.model_validate({
            "routes": [{"prefix": "/api", "service": "b"}],
            "services": {"b": {"endpoints": [{"url": "http://127.0.0.1:9"}]}},
            "settings": {"auth": {"api_keys": True}, "limits": {"max_header_bytes": 2048}},
            "keys_db": str(tmp_path / "keys.db"),
        })
        gateway = Gateway(config, loop, base_dir=tmp_path)
        server = await loop.create_server(lambda: ClientConnection(gateway, gateway.connections, loop), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        statuses = []
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for target in (f"/nowhere?{QUERY}", f"/api/x?{QUERY}", f"/nowhere?{QUERY}"):  # 404, 401, 404 again
                writer.write(f"GET {target} HTTP/1.1\r\nHost: a\r\nReason: r-1\r\n\r\n".encode())
                status, headers, _ = await read_response(reader)
                statuses.append(status)
                assert headers.get("connection") != "close"
            writer.close()
            # a refusal of the parser itself (431) is answered before the connection closes, never reset
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET /api/x?{QUERY} HTTP/1.1\r\nHost: a\r\nX-Big: {'b' * 4096}\r\n\r\n".encode())
            status, _, _ = await read_response(reader)
            statuses.append(status)
            assert await asyncio.wait_for(reader.read(), 10) == b""  # closed in order after the answer
            writer.close()
        finally:
            server.close()
            for connection in list(gateway.connections):
                connection.transport.close()
        return statuses

    with caplog.at_level(logging.WARNING, logger="lichen.gateway"):
        assert asyncio.run(scenario()) == [404, 401, 404, 431]
    denied = [r.msg.fields for r in caplog.records if isinstance(r.msg, Event) and r.msg.name == "request_denied"]
    assert [line["status"] for line in denied] == [404, 401, 404, 431]
    assert [line["reason"] for line in denied] == ["no_route", "missing_credentials", "no_route", "headers_too_large"]
    for line in denied:
        assert line["user_id"] == plan.token("u-77")  # the tokens that collide with nothing are still written
        assert line["client_ip"] == "127.0.0.1" and "exc_info" not in line  # the line's own fields won
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
