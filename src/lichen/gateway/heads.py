"""The heads the gateway writes: a request's head as a replica gets it, and a replica's response head as the
client gets it (hop-by-hop headers dropped, ``X-Request-ID`` and ``X-Forwarded-For`` set)."""

from __future__ import annotations

from lichen.gateway.requests import Request
from lichen.gateway.responses import REASONS
from lichen.gateway.upstreams import Exchange

HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade", b"transfer-encoding", b"expect"}
)
_REPLACED_WHEN_TRACING = HOP_BY_HOP | {b"traceparent"}
UPGRADE_WEBSOCKET = b"connection: upgrade\r\nupgrade: websocket\r\n"


def request_head(request: Request, target: str, request_id: str, generated_id: bool, client_ip: str,
                 upgrade: bytes = b"") -> bytes:
    """The head sent upstream; ``upgrade`` (:data:`UPGRADE_WEBSOCKET`) asks the replica to switch protocols.

    With tracing on, the ``traceparent`` names the gateway's span as the parent (``tracestate`` passes as it is).
    """
    lines = [b"%s %s HTTP/1.1\r\n" % (request.method.encode(), target.encode("latin-1"))]
    forwarded_for = None
    trace = request.trace
    dropped = HOP_BY_HOP if trace is None else _REPLACED_WHEN_TRACING
    for name, value in request.headers:
        if name in dropped:
            continue
        if name == b"x-forwarded-for":
            forwarded_for = value
            continue
        lines.append(b"%s: %s\r\n" % (name, value))
    if request.host is None:
        lines.append(b"host: gateway\r\n")
    if generated_id:
        lines.append(b"x-request-id: %s\r\n" % request_id.encode())
    ip = client_ip.encode()
    lines.append(b"x-forwarded-for: %s\r\n" % (forwarded_for + b", " + ip if forwarded_for else ip))
    if request.chunked:
        lines.append(b"transfer-encoding: chunked\r\n")
    if trace is not None:
        lines.append(b"traceparent: %s\r\n" % trace.header)
    if upgrade:
        lines.append(upgrade)
    lines.append(b"\r\n")
    return b"".join(lines)


def response_head(exchange: Exchange, request: Request, request_id: str) -> tuple[bytes, bool, bool]:
    """The head sent to the client, whether the body is re-chunked, and whether the connection must close after."""
    lines = [b"HTTP/1.1 %d %s\r\n" % (exchange.status, exchange.reason or REASONS.get(exchange.status, b"Unknown"))]
    has_id = False
    for name, value in exchange.headers:
        lname = name.lower()
        if lname in HOP_BY_HOP:
            continue
        if lname == b"x-request-id":
            has_id = True
        lines.append(b"%s: %s\r\n" % (name, value))
    if not has_id:
        lines.append(b"x-request-id: %s\r\n" % request_id.encode())
    chunk_out = False
    close = not request.keep_alive
    bodyless = exchange.is_head or exchange.status in (204, 304)
    if not exchange.content_length and not bodyless:
        if request.http11:
            chunk_out = True
            lines.append(b"transfer-encoding: chunked\r\n")
        else:
            close = True
    if close:
        lines.append(b"connection: close\r\n")
    elif not request.http11:
        lines.append(b"connection: keep-alive\r\n")  # an HTTP/1.0 client asked to keep the connection
    lines.append(b"\r\n")
    return b"".join(lines), chunk_out, close
