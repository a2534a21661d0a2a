"""Every mutating control-API call goes into the audit log, allowed or refused (:mod:`lichen.runtime.audit_logs`).

An ASGI middleware around the API: for each call other than GET, HEAD and
OPTIONS (and the query API's POSTs, which only read) it keeps the first bytes of the request body and the status, and
once the call is answered appends who (the token id and role the route's
:class:`~lichen.runtime.access_tokens.RoleCheck` found), what (method, path,
query and JSON body, secret-looking fields redacted), from where (the peer
address and ``X-Lichen-Client``, which the CLI sets) and the result (``ok``,
``denied`` with the reason, or ``error`` with the answer's first bytes).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any
from urllib.parse import parse_qsl

from lichen.runtime.audit_logs import AuditLog, clean_params
from lichen.errors import StateError

log = logging.getLogger("lichen.audit")
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
READ_ONLY_PREFIXES = ("/api/v1/",)
"""the Prometheus query API, which takes queries by POST too (Grafana's default): reads, not changes"""
KEEP_BYTES = 4096


def _params(query: bytes, body: bytes) -> dict[str, Any]:
    params: dict[str, Any] = dict(parse_qsl(query.decode("latin-1")))
    if body:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            params.update(parsed)
        elif body.strip():
            params["body"] = f"<{len(body)} bytes, not a JSON object>"
    return clean_params(params)


class AuditMiddleware:
    def __init__(self, app: Any, audit: AuditLog) -> None:
        self.app = app
        self.audit = audit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in READ_METHODS or scope["path"].startswith(READ_ONLY_PREFIXES):
            await self.app(scope, receive, send)
            return
        body = bytearray()
        answer = bytearray()
        status = 500
        state = scope.setdefault("state", {})

        async def receive_body() -> dict:
            message = await receive()
            if message["type"] == "http.request" and len(body) < KEEP_BYTES:
                body.extend(message.get("body", b"")[: KEEP_BYTES - len(body)])
            return message

        async def send_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body" and status >= 400 and len(answer) < 512:
                answer.extend(message.get("body", b"")[: 512 - len(answer)])
            await send(message)

        try:
            await self.app(scope, receive_body, send_status)
        finally:
            await self._record(scope, state, bytes(body), status, bytes(answer))

    async def _record(self, scope: dict, state: dict, body: bytes, status: int, answer: bytes) -> None:
        principal = state.get("principal")
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        client = scope.get("client")
        fields: dict[str, Any] = {
            "actor": principal.token_id if principal is not None else "anonymous",
            "role": principal.role if principal is not None else None,
            "source": "api",
            "client": headers.get("x-lichen-client") or headers.get("user-agent", ""),
            "peer": f"{client[0]}:{client[1]}" if client else None,
            "action": f"{scope['method']} {scope['path']}",
            "params": _params(scope.get("query_string", b""), body),
            "status": status,
            "result": "ok" if status < 400 else "denied" if status in (401, 403) else "error",
        }
        if status >= 400:
            fields["detail"] = state.get("denied") or _detail(answer)
        try:
            await asyncio.to_thread(self.audit.append, fields)
        except StateError as exc:  # the call already happened: say loudly that it went unrecorded
            log.error("audit_append_failed", extra={"error": str(exc), "audit_action": fields["action"]})


def _detail(answer: bytes) -> str:
    try:
        parsed = json.loads(answer)
    except ValueError:
        return answer.decode("utf-8", "replace")[:200]
    if isinstance(parsed, dict):
        value = parsed.get("detail") or parsed.get("error") or parsed
        return value if isinstance(value, str) else json.dumps(value, default=str)[:200]
    return str(parsed)[:200]
