"""The plaintext listener beside a TLS gateway: every request is answered ``308`` to the same URL on https.

:class:`Redirector` is a :class:`~lichen.gateway.serving.Front`, so this
listener parses with the same protocol and keeps the same limits and
timeouts (header size, slowloris, keep-alive idle) as the gateway itself; it
never proxies anything. The target host is the request's ``Host`` without its
port (nginx's ``return 308 https://$host$request_uri``), or the gateway's
listen host when there is none; a ``Host`` that is not a host name or
address is answered 400.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from urllib.parse import urlsplit

from lichen.gateway.metrics import GatewayMetrics
from lichen.gateway.requests import Request
from lichen.gateway.responses import Denial, Responder
from lichen.gateway.serving import ConnectionLimits
from lichen.logs import get_logger

log = get_logger("lichen.gateway")
_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")


def _host_name(host: str) -> str | None:
    """``host`` (a Host header without its port) as it goes in a URL, or None when it is not a name or address."""
    if host.startswith("["):
        inner = host[1:-1] if host.endswith("]") else ""
        try:
            return f"[{ipaddress.IPv6Address(inner)}]"
        except ValueError:
            return None
    return host.lower() if _NAME.fullmatch(host) else None


def redirect_location(host_header: bytes | None, target: bytes, https_port: int, fallback_host: str) -> bytes | None:
    """Where a plaintext request goes on https: ``https://HOST[:PORT]PATH?QUERY``; None for a bad Host."""
    if host_header:
        text = host_header.decode("latin-1").strip()
        host = text.rsplit(":", 1)[0] if text.count(":") == 1 or (text.startswith("[") and "]:" in text) else text
        name = _host_name(host)
        if name is None:
            return None
    else:
        name = _host_name(f"[{fallback_host}]" if ":" in fallback_host else fallback_host) or "localhost"
    path = target.decode("latin-1")
    if not path.startswith("/"):  # absolute-form (http://host/path) or asterisk-form (*)
        parts = urlsplit(path)
        path = (parts.path if parts.path.startswith("/") else "/") + (f"?{parts.query}" if parts.query else "")
    port = "" if https_port == 443 else f":{https_port}"
    return f"https://{name}{port}{path}".encode("latin-1")


class Redirector:
    """The front of the redirect listener (module docs)."""

    def __init__(self, limits: Callable[[], ConnectionLimits], https_port: int, fallback_host: str,
                 metrics: GatewayMetrics) -> None:
        self._limits = limits
        self.https_port = https_port
        self.fallback_host = fallback_host
        self.metrics = metrics

    @property
    def limits(self) -> ConnectionLimits:
        """the gateway's, as its config has them now"""
        return self._limits()

    async def handle(self, request: Request, responder: Responder) -> None:
        location = redirect_location(request.host, request.url, self.https_port, self.fallback_host)
        if location is None:
            self.refuse(responder, request, Denial(400, "malformed_request", "invalid Host header"))
            return
        responder.send_simple(308, "", "", headers=((b"location", location),), body=b"", content_type=b"text/plain",
                              close=not request.keep_alive or (request.has_body and not request.body.done))

    def refuse(self, responder: Responder, request: Request | None, denial: Denial, request_id: str = "") -> None:
        self.metrics.deny(denial.reason)
        log.warning("request_denied", status=denial.status, reason=denial.reason, client_ip=responder.client_ip,
                    method=request.method if request else None, listener="redirect")
        responder.refuse(denial, request_id)

    def log_exception(self, message: str, exc: BaseException | None) -> None:
        log.error("gateway_error", what=message, error_type=type(exc).__name__ if exc else None, listener="redirect")
