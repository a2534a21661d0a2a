"""The request path: route, authenticate, rate-limit, admit, then proxy with retries and outlier ejection.

Decisions come from :mod:`lichen.control` (routing, balancing, outliers,
retry budgets, rate limiting, admission); this module applies them to
sockets. See docs/gateway.md for the behaviour it promises.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from pathlib import Path
from typing import Any

from lichen.control.admission import admission_decision, retry_after_header_s
from lichen.control.outliers import OutlierPolicy, record_failure, record_success
from lichen.control.rate_limiting import TokenBucket, default_burst, take_token
from lichen.control.retry_budgets import (
    IDEMPOTENT_METHODS,
    backoff_s,
    can_retry,
    is_idempotent,
    note_request,
    note_retry,
    should_retry,
)
from lichen.control.routing import match_route, rewrite_path
from lichen.gateway.authenticating import ALLOWED_ANONYMOUS, Authenticator, credential_of
from lichen.gateway.configs import GatewayConfig
from lichen.gateway.keys import KeyCache
from lichen.gateway.metrics import GatewayMetrics
from lichen.gateway.serving import REASONS, ClientConnection, Request
from lichen.gateway.tables import ServiceTable, SharedState, Tables
from lichen.gateway.upstreams import (
    Exchange,
    UpstreamReset,
    UpstreamState,
    open_connection,
    release_connection,
    take_idle_connection,
)

log = logging.getLogger("lichen.gateway")

_HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade", b"transfer-encoding", b"expect"}
)
_MAX_BUCKETS = 100_000
# A response whose head arrives before its body is held back before the client
# sees a byte (like nginx's proxy_buffering), so a replica that dies between
# its head and the end of a small body is retried instead of truncating the
# client's response: a Content-Length body of at most BUFFER_WHOLE_BODY_BYTES
# until it is complete; a chunked or close-delimited body until it is complete,
# passes that size, or HOLD_STREAM_S passes (then it streams as it arrives).
# Server-Sent Events are never held.
BUFFER_WHOLE_BODY_BYTES = 64 * 1024
HOLD_STREAM_S = 0.05


class RequestBodyError(Exception):
    """The client's request body broke a limit or the chunked framing while it was being forwarded."""


class Gateway:
    def __init__(self, config: GatewayConfig, loop: asyncio.AbstractEventLoop, base_dir: Path | None = None) -> None:
        self.loop = loop
        self.base_dir = base_dir or Path.cwd()
        self.shared = SharedState()
        self.metrics = GatewayMetrics()
        self.connections: set[ClientConnection] = set()
        self.key_buckets: dict[str, TokenBucket] = {}
        self.ip_buckets: dict[str, TokenBucket] = {}
        self.apply(config)

    # ------------------------------------------------------------------ config
    def apply(self, config: GatewayConfig) -> None:
        """Swap in a new config; requests in flight finish on the tables they started with."""
        settings = config.settings
        keys_path = Path(config.keys_db)
        keys = KeyCache(keys_path if keys_path.is_absolute() else self.base_dir / keys_path)
        keys.refresh()
        self.auth = Authenticator(settings.auth, keys, self.base_dir)
        self.config = config
        self.settings = settings
        self.tables = Tables(config, self.shared)
        self.max_body_bytes = settings.limits.max_body_bytes
        self.max_header_bytes = settings.limits.max_header_bytes
        o = settings.outlier_detection
        self.outlier_policy = OutlierPolicy(o.consecutive_failures, o.base_ejection_s, o.max_ejection_s, o.max_ejection_percent)
        rl = settings.rate_limit
        self.key_rate = (rl.per_key_rps, default_burst(rl.per_key_rps, rl.burst)) if rl.per_key_rps else None
        self.ip_rate = (rl.per_ip_rps, default_burst(rl.per_ip_rps, rl.burst)) if rl.per_ip_rps else None
        self.inflight_gauges = {name: self.metrics.inflight_gauge(name) for name in self.tables.services}

    # ------------------------------------------------------------------ logging
    def log_exception(self, message: str, exc: BaseException | None) -> None:
        log.error(json.dumps({"event": "error", "message": message, "error": type(exc).__name__ if exc else None}))

    def deny(self, conn: ClientConnection, request: Request | None, status: int, reason: str, message: str,
             *, request_id: str = "", headers: list[tuple[bytes, bytes]] | None = None, path: str = "",
             extra: dict[str, Any] | None = None) -> None:
        """Refuse a request: count it, log it (never a secret), answer with a small JSON body and close if needed."""
        self.metrics.deny(reason)
        log.warning(json.dumps({
            "event": "deny", "status": status, "reason": reason, "client_ip": conn.client_ip,
            "method": request.method if request else None, "path": path[:200] or None, "request_id": request_id or None,
        }))
        close = status in (400, 408, 413, 431) or request is None
        conn.send_simple(status, message, request_id, close=close, headers=headers, extra=extra)

    # ------------------------------------------------------------------ request path
    async def handle(self, conn: ClientConnection, req: Request) -> None:
        loop = self.loop
        start = loop.time()
        # A generated id needs uniqueness, not secrecy: getrandbits avoids a getrandom() system call per request.
        request_id = req.request_id.decode("latin-1")[:128] if req.request_id else f"{random.getrandbits(64):016x}"
        url = req.url.decode("latin-1")
        path, _, query = url.partition("?")
        if req.reject is not None:
            self.deny(conn, req, req.reject[0], "malformed_request", req.reject[1], request_id=request_id)
            return
        if req.content_length is not None and req.transfer_encoding is not None:
            self.deny(conn, req, 400, "malformed_request", "both Content-Length and Transfer-Encoding", request_id=request_id)
            return
        if path == self.config.metrics_path or path.startswith("/-/"):
            self._builtin(conn, req, path, request_id)
            return
        tables = self.tables
        host = req.host.decode("latin-1") if req.host else None
        header_map = (
            {k.decode("latin-1"): v.decode("latin-1") for k, v in req.headers} if tables.match_headers else {}
        )
        rule = match_route(tables.rules, host, path, header_map)
        if rule is None:
            self.metrics.observe_request("", "", "", 404, loop.time() - start)
            self.deny(conn, req, 404, "no_route", f"no route matches {path[:200]}", request_id=request_id, path=path,
                      extra={"routes": tables.route_listing})
            return
        service = tables.services[rule.service]
        # -- authentication
        verdict = ALLOWED_ANONYMOUS
        if self.auth.enabled:
            credential = credential_of(
                req.authorization.decode("latin-1") if req.authorization else None,
                req.api_key.decode("latin-1") if req.api_key else None,
            )
            verdict = self.auth.check(credential, path, time.time())
        if verdict.status:
            challenge = [(b"www-authenticate", b'Bearer realm="lichen"')] if verdict.status == 401 else None
            self.deny(conn, req, verdict.status, verdict.reason,
                      "forbidden for this route" if verdict.status == 403 else "missing or invalid credentials",
                      request_id=request_id, headers=challenge, path=path)
            self.metrics.observe_request(rule.prefix, rule.service, "", verdict.status, loop.time() - start)
            return
        # -- rate limits
        now = loop.time()
        for scope, rate, buckets, who in self._rate_checks(verdict.principal, conn.client_ip):
            if rate is None or who is None:
                continue
            decision = take_token(buckets.get(who), now, rate[0], rate[1])
            if len(buckets) >= _MAX_BUCKETS and who not in buckets:
                buckets.clear()
            buckets[who] = decision.bucket
            if not decision.allowed:
                self.metrics.rate_limit(scope)
                retry_after = str(max(1, int(decision.retry_after_s + 0.999))).encode()
                self.deny(conn, req, 429, f"rate_limited_{scope}", "rate limit exceeded", request_id=request_id,
                          headers=[(b"retry-after", retry_after)], path=path)
                self.metrics.observe_request(rule.prefix, rule.service, "", 429, loop.time() - start)
                return
        if conn.closed:
            return
        if req.expect is not None and req.expect.lower() == b"100-continue" and req.has_body:
            conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        # -- admission
        runtime = service.runtime
        admission = self.settings.admission
        verdict_admit = admission_decision(runtime.inflight, service.max_inflight, len(runtime.waiters), admission.queue_size)
        holds_slot = False  # a queued request is handed the slot of the request that finishes
        if verdict_admit != "admit":
            if verdict_admit == "queue":
                waiter: asyncio.Future[bool] = loop.create_future()
                runtime.waiters.append(waiter)
                timer = loop.call_later(admission.queue_timeout_s, lambda: waiter.done() or waiter.set_result(False))
                try:
                    holds_slot = await waiter
                except asyncio.CancelledError:
                    if waiter.done() and not waiter.cancelled() and waiter.result():
                        self._release_slot(runtime)  # granted, but the client left: pass the slot on
                    raise
                finally:
                    timer.cancel()
                    if waiter in runtime.waiters:
                        runtime.waiters.remove(waiter)
            if not holds_slot:
                self.metrics.shed_one(rule.service)
                retry_after = retry_after_header_s(admission.queue_timeout_s, len(runtime.waiters), service.max_inflight)
                self.deny(conn, req, 503, "shed", "service is at capacity, retry later", request_id=request_id,
                          headers=[(b"retry-after", str(retry_after).encode())], path=path)
                self.metrics.observe_request(rule.prefix, rule.service, "", 503, loop.time() - start)
                return
        if not holds_slot:
            runtime.inflight += 1
        gauge = self.inflight_gauges.get(rule.service)
        if gauge is not None:
            gauge.inc()
        try:
            status, revision = await self._proxy(conn, req, rule, service, path, query, request_id, start)
        finally:
            if gauge is not None:
                gauge.dec()
            self._release_slot(runtime)
        self.metrics.observe_request(rule.prefix, rule.service, revision, status, loop.time() - start)

    @staticmethod
    def _release_slot(runtime: Any) -> None:
        """Hand the in-flight slot to the oldest queued request, or give it back."""
        while runtime.waiters:
            waiter = runtime.waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)
                return
        runtime.inflight -= 1

    def _rate_checks(self, principal: str | None, client_ip: str) -> list[tuple[str, Any, dict[str, TokenBucket], Any]]:
        checks = []
        if self.key_rate is not None and principal is not None:
            checks.append(("key", self.key_rate, self.key_buckets, principal))
        if self.ip_rate is not None:
            checks.append(("ip", self.ip_rate, self.ip_buckets, client_ip))
        return checks

    def _builtin(self, conn: ClientConnection, req: Request, path: str, request_id: str) -> None:
        if path == self.config.metrics_path:
            conn.send_simple(200, "", request_id, body=self.metrics.exposition(),
                             content_type=b"text/plain; version=0.0.4; charset=utf-8")
        elif path == "/-/healthz":
            conn.send_simple(200, "", request_id, body=b'{"status":"ok"}')
        elif path == "/-/routes":
            conn.send_simple(200, "", request_id, body=json.dumps({"routes": self.tables.route_listing}).encode())
        elif path == "/-/config":
            conn.send_simple(200, "", request_id, body=json.dumps({"generation": self.config.generation}).encode())
        else:
            conn.send_simple(404, f"no route matches {path[:200]}", request_id, extra={"routes": self.tables.route_listing})

    # ------------------------------------------------------------------ upstream
    def _record(self, service: ServiceTable, upstream: UpstreamState, failed: bool, now: float) -> None:
        if upstream.retired:
            return  # it left the config (a planned stop): its failures say nothing about its health
        state = upstream.outlier
        if failed:
            new_state, ejected = record_failure(
                state, now, self.outlier_policy, service.ejected_count(now), len(service.ready)
            )
            service.set_outlier_state(upstream, new_state)
            if ejected:
                self.metrics.ejection(service.name, upstream.id)
                log.warning(json.dumps({
                    "event": "ejected", "service": service.name, "upstream": upstream.id,
                    "for_s": round(upstream.outlier.ejected_until - now, 3) if upstream.outlier.ejected_until else None,
                }))
        elif state.consecutive_failures or state.ejections or state.ejected_until is not None:
            upstream.outlier = record_success(state, now, self.outlier_policy)

    def _request_head(self, req: Request, target: str, request_id: str, generated_id: bool, client_ip: str) -> bytes:
        lines = [b"%s %s HTTP/1.1\r\n" % (req.method.encode(), target.encode("latin-1"))]
        forwarded_for = None
        for name, value in req.headers:
            if name in _HOP_BY_HOP:
                continue
            if name == b"x-forwarded-for":
                forwarded_for = value
                continue
            lines.append(b"%s: %s\r\n" % (name, value))
        if req.host is None:
            lines.append(b"host: gateway\r\n")
        if generated_id:
            lines.append(b"x-request-id: %s\r\n" % request_id.encode())
        ip = client_ip.encode()
        lines.append(b"x-forwarded-for: %s\r\n" % (forwarded_for + b", " + ip if forwarded_for else ip))
        if req.chunked:
            lines.append(b"transfer-encoding: chunked\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)

    def _response_head(self, exchange: Exchange, req: Request, request_id: str) -> tuple[bytes, bool, bool]:
        """The head sent to the client, whether the body is re-chunked, and whether the connection must close after."""
        lines = [b"HTTP/1.1 %d %s\r\n" % (exchange.status, exchange.reason or REASONS.get(exchange.status, b"Unknown"))]
        has_id = False
        for name, value in exchange.headers:
            lname = name.lower()
            if lname in _HOP_BY_HOP:
                continue
            if lname == b"x-request-id":
                has_id = True
            lines.append(b"%s: %s\r\n" % (name, value))
        if not has_id:
            lines.append(b"x-request-id: %s\r\n" % request_id.encode())
        chunk_out = False
        close = not req.keep_alive
        bodyless = exchange.is_head or exchange.status in (204, 304)
        if not exchange.content_length and not bodyless:
            if req.http11:
                chunk_out = True
                lines.append(b"transfer-encoding: chunked\r\n")
            else:
                close = True
        if close:
            lines.append(b"connection: close\r\n")
        elif not req.http11:
            lines.append(b"connection: keep-alive\r\n")  # an HTTP/1.0 client asked to keep the connection
        lines.append(b"\r\n")
        return b"".join(lines), chunk_out, close

    async def _proxy(self, conn: ClientConnection, req: Request, rule: Any, service: ServiceTable, path: str,
                     query: str, request_id: str, start: float) -> tuple[int, str]:
        loop = self.loop
        retry_spec = self.settings.retries
        target = rewrite_path(rule, path) + ("?" + query if query else "")
        upstream_path = target.partition("?")[0]
        timeout_s = rule.timeout_s or service.timeout_s
        deadline = start + timeout_s
        idempotent = req.method in IDEMPOTENT_METHODS or is_idempotent(req.method, upstream_path, service.idempotent_paths())
        pinned = req.pinned.decode("latin-1") if req.pinned else None
        hash_key = service.hash_key(req.headers, path, query) if service.hash_kind else None
        runtime = service.runtime
        runtime.budget = note_request(runtime.budget, start)
        head = self._request_head(req, target, request_id, req.request_id is None, conn.client_ip)
        tried: list[UpstreamState] = []
        attempt = 0
        last_status, last_revision = 503, ""
        while True:
            attempt += 1
            # The current table: a reload while this request waited or retried may have dropped the replica it tried.
            service = self.tables.services.get(service.name, service)
            upstream = service.pick(loop.time(), pinned, hash_key, tried)
            if upstream is None and tried:
                upstream = service.pick(loop.time(), pinned, hash_key, None)  # every replica tried: same one again
            if upstream is None:
                if not tried:
                    conn.send_simple(503, "no ready upstream for this service", request_id,
                                     headers=[(b"retry-after", b"1")])
                    return 503, ""
                break
            tried.append(upstream)
            last_revision = upstream.revision
            outcome, status, retryable = await self._attempt(conn, req, service, upstream, head, deadline, idempotent,
                                                             attempt, request_id)
            self.metrics.attempt(service.name, upstream.revision, outcome)
            if not retryable:
                if conn.response_started:
                    return status, upstream.revision
                last_status = status or 502
                break
            last_status = status or 502
            now = loop.time()
            if not can_retry(runtime.budget, now, retry_spec.budget_ratio):
                break
            runtime.budget = note_retry(runtime.budget, now)
            self.metrics.retry(service.name)
            pause = backoff_s(attempt, retry_spec.backoff_base_ms, retry_spec.backoff_max_ms, random.random())
            if loop.time() + pause >= deadline:
                break
            if pause > 0:
                await asyncio.sleep(pause)
        if conn.response_started:
            return last_status, last_revision
        status = last_status if last_status in (502, 503, 504) else 502
        conn.send_simple(status, "upstream unavailable" if status != 504 else "upstream timed out", request_id,
                         close=req.body_error != 0 or (req.has_body and not req.body_done))
        return status, last_revision

    async def _attempt(self, conn: ClientConnection, req: Request, service: ServiceTable, upstream: UpstreamState,
                       head: bytes, deadline: float, idempotent: bool, attempt: int, request_id: str) -> tuple[str, int, bool]:
        """One try on one upstream: (outcome, status sent or to report, whether another try may follow)."""
        loop = self.loop
        max_attempts = self.settings.retries.attempts
        upstream.outstanding += 1
        try:
            try:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TimeoutError
                uconn = take_idle_connection(upstream, loop.time())
                if uconn is None:
                    uconn = await open_connection(loop, upstream, min(remaining, self.config.connect_timeout_s))
            except (OSError, TimeoutError):
                self._record(service, upstream, True, loop.time())
                retry = should_retry(attempt=attempt, max_attempts=max_attempts, idempotent=idempotent,
                                     connect_failed=True, status=None, response_started=conn.response_started,
                                     body_replayable=req.replay_ok)
                return "connect_error", 502, retry
            if req.body_error:
                release_connection(uconn, loop.time(), True)
                self._reject_body(conn, req, request_id)
                return "client_error", req.body_error, False
            exchange = Exchange(loop, req.method == "HEAD")
            uconn.begin(exchange)

            if not req.body_done:  # the body is still arriving: it can break, and it needs back-pressure

                def on_body_error() -> None:
                    if not exchange.head.done():
                        exchange.head.set_exception(RequestBodyError())

                req.on_body_error = on_body_error
                exchange.on_pause = conn.pause_reading
                exchange.on_resume = conn.resume_reading
            transport = uconn.transport
            if req.has_body and not req.body_error:
                chunked = req.chunked
                parts = [head]
                for chunk in req.chunks:
                    parts.append(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                if req.body_done:
                    if chunked:
                        parts.append(b"0\r\n\r\n")
                else:
                    def sink(chunk: bytes | None, _t: Any = transport, _c: bool = chunked) -> None:
                        if _t.is_closing():
                            return
                        if chunk is None:
                            if _c and not req.body_error:
                                _t.write(b"0\r\n\r\n")
                        elif _c:
                            _t.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                        else:
                            _t.write(chunk)
                    req.sink = sink
                    if not req.replay_ok:
                        req.chunks = []
                    conn.resume_reading()
                transport.write(b"".join(parts))
            else:
                transport.write(head)
            timer = loop.call_later(
                max(0.0, deadline - loop.time()),
                lambda: exchange.head.done() or exchange.head.set_exception(TimeoutError()),
            )
            try:
                status = await exchange.head
                if not exchange.complete and not exchange.event_stream:
                    await self._hold_body(exchange, max(0.0, deadline - loop.time()))
            except UpstreamReset:
                self._discard(uconn, req)
                self._record(service, upstream, True, loop.time())
                retry = should_retry(attempt=attempt, max_attempts=max_attempts, idempotent=idempotent,
                                     connect_failed=False, status=None, response_started=conn.response_started,
                                     body_replayable=req.replay_ok and req.body_error == 0)
                return "reset", 502, retry
            except TimeoutError:
                self._discard(uconn, req)
                self._record(service, upstream, True, loop.time())
                return "timeout", 504, False
            except RequestBodyError:
                self._discard(uconn, req)
                self._reject_body(conn, req, request_id)
                return "client_error", req.body_error, False
            except asyncio.CancelledError:
                self._discard(uconn, req)
                raise
            finally:
                timer.cancel()
                req.on_body_error = None
            failed = status >= 500
            self._record(service, upstream, failed, loop.time())
            if req.body_error:
                self._discard(uconn, req)
                self._reject_body(conn, req, request_id)
                return "ok", req.body_error, False
            if failed and should_retry(attempt=attempt, max_attempts=max_attempts, idempotent=idempotent,
                                       connect_failed=False, status=status, response_started=conn.response_started,
                                       body_replayable=req.replay_ok):
                self._discard(uconn, req)
                return "http_5xx", status, True
            if failed and self.config.mask_upstream_errors:
                # The status and Retry-After go to the client; the upstream's body (a traceback?) does not.
                retry_after = [(b"retry-after", v) for k, v in exchange.headers if k.lower() == b"retry-after"]
                if exchange.complete:
                    release_connection(uconn, loop.time(), exchange.keep_alive and req.body_done and not req.body_error)
                else:
                    self._discard(uconn, req)
                conn.send_simple(status, "upstream error", request_id, headers=retry_after[:1],
                                 close=not req.keep_alive or not req.body_done)
                return "http_5xx", status, False
            response_head, chunk_out, close = self._response_head(exchange, req, request_id)
            if close:
                conn.close_after = True
            conn.response_started = True
            pending = exchange.pending
            if chunk_out:
                pending = [b"%x\r\n%b\r\n" % (len(c), c) for c in pending if c]
            if exchange.complete:  # the whole response is here already: one write, no streaming machinery
                conn.write(b"".join([response_head, *pending, b"0\r\n\r\n" if chunk_out else b""]))
                exchange.pending = []
                release_connection(uconn, loop.time(), exchange.keep_alive and req.body_done and req.body_error == 0)
                return ("http_5xx" if failed else "ok"), status, False
            conn.write(b"".join([response_head, *pending]))
            exchange.pending = []
            conn.on_unwritable.append(uconn.pause_reading)
            conn.on_writable.append(uconn.resume_reading)
            write = conn.transport.write
            if chunk_out:
                def forward(chunk: bytes) -> None:
                    if chunk and not conn.closed:
                        write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            else:
                def forward(chunk: bytes) -> None:
                    if not conn.closed:
                        write(chunk)
            exchange.start_forwarding(forward)
            try:
                keep_alive = await exchange.done
            except UpstreamReset:
                self._discard(uconn, req)
                conn.close_after = True  # the client got part of a response: the only honest signal is a close
                return "reset", status, False
            except asyncio.CancelledError:
                self._discard(uconn, req)
                raise
            if chunk_out:
                conn.write(b"0\r\n\r\n")
            release_connection(uconn, loop.time(), keep_alive and req.body_done and req.body_error == 0)
            return ("http_5xx" if failed else "ok"), status, False
        finally:
            upstream.outstanding -= 1

    @staticmethod
    async def _hold_body(exchange: Exchange, remaining_s: float) -> None:
        """Hold a response body back before forwarding it (see BUFFER_WHOLE_BODY_BYTES).

        Raises UpstreamReset if the upstream dies meanwhile (the attempt is then
        retried like a reset before the response), TimeoutError past the deadline.
        """
        if 0 <= exchange.body_bytes <= BUFFER_WHOLE_BODY_BYTES:
            await asyncio.wait_for(exchange.done, remaining_s)
            return
        if exchange.body_bytes >= 0:
            return  # a large Content-Length body streams at once
        full = asyncio.get_running_loop().create_future()
        exchange.hold_limit, exchange.hold_full = BUFFER_WHOLE_BODY_BYTES, full
        try:
            await asyncio.wait((exchange.done, full), timeout=min(HOLD_STREAM_S, remaining_s),
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            exchange.hold_full = None
            full.cancel()
        if exchange.done.done() and not exchange.done.cancelled() and exchange.done.exception() is not None:
            raise exchange.done.exception()  # type: ignore[misc]

    def _reject_body(self, conn: ClientConnection, req: Request, request_id: str) -> None:
        status = req.body_error
        reason = "body_too_large" if status == 413 else "malformed_request"
        message = "request body is larger than the limit" if status == 413 else "malformed request body"
        if conn.response_started:
            self.metrics.deny(reason)
            conn.close_after = True
        else:
            self.deny(conn, req, status, reason, message, request_id=request_id)

    def _discard(self, uconn: Any, req: Request) -> None:
        exchange = uconn.exchange
        req.sink = None
        if exchange is not None:
            for future in (exchange.head, exchange.done):
                if future.done() and not future.cancelled():
                    future.exception()
                else:
                    future.cancel()
        release_connection(uconn, self.loop.time(), False)
