"""The request handler: route, guard (auth, rate limits, admission), then proxy with retries and outlier ejection.

:class:`Gateway` is the :class:`~lichen.gateway.serving.Front` the protocol
hands each request to, with a :class:`~lichen.gateway.responses.Responder`
to answer through. A request flows one way through the modules: ``serving``
(parse) → ``proxying`` (this) → ``guarding`` (checks) and ``upstreams``
(sockets to replicas), with decisions from :mod:`lichen.control` (routing,
balancing, outliers, retry budgets). One attempt on one replica is four
steps, each returning what happened: connect, send, await the head, forward.
See docs/gateway.md for the behaviour it promises.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from lichen.clocks import Clock, SystemClock
from lichen.control.outliers import OutlierPolicy, record_failure, record_success
from lichen.control.retry_budgets import (
    IDEMPOTENT_METHODS,
    backoff_s,
    can_retry,
    is_idempotent,
    note_request,
    note_retry,
    should_retry,
)
from lichen.control.routing import RouteRule, match_route, rewrite_path
from lichen.control.traffic_faults import effect_for
from lichen.gateway import guarding
from lichen.gateway.activating import Activator, ControllerAsker, ReplicaAsker, refuse_held
from lichen.gateway.authenticating import Authenticator
from lichen.gateway.builtins import answer_builtin
from lichen.gateway.configs import GatewayConfig
from lichen.gateway.fault_injection import inject
from lichen.gateway.heads import UPGRADE_WEBSOCKET, request_head, response_head
from lichen.gateway.keys import KeyCache
from lichen.gateway.metrics import GatewayMetrics
from lichen.gateway.requests import Request
from lichen.gateway.responses import Denial, Responder
from lichen.gateway.serving import BODY_TIMEOUT_MESSAGE, ClientConnection, ConnectionLimits
from lichen.gateway.spans import Tracing, retuned
from lichen.gateway.tables import ServiceTable, SharedState, Tables
from lichen.gateway.tunnels import WebSockets
from lichen.gateway.upstreams import (
    LAST_CHUNK,
    BodyWriter,
    Exchange,
    RequestBodyError,
    UpstreamConnection,
    UpstreamReset,
    UpstreamState,
    open_connection,
    release_connection,
    take_idle_connection,
)
from lichen.logs import TRACE, active_redaction, get_logger
from lichen.redacting import line_fields

log = get_logger("lichen.gateway")

# A response whose head arrives before its body is held back before the client
# sees a byte (like nginx's proxy_buffering), so a replica that dies between
# its head and the end of a small body is retried instead of truncating the
# client's response: a Content-Length body of at most BUFFER_WHOLE_BODY_BYTES
# until it is complete; a chunked or close-delimited body until it is complete,
# passes that size, or HOLD_STREAM_S passes (then it streams as it arrives).
# Server-Sent Events are never held.
BUFFER_WHOLE_BODY_BYTES = 64 * 1024
HOLD_STREAM_S = 0.05
_BODY_ERRORS = {413: ("body_too_large", "request body is larger than the limit"),
                408: ("body_timeout", BODY_TIMEOUT_MESSAGE)}


@dataclass(slots=True)
class Call:
    """One client request on its way to a replica: what every attempt needs."""

    request: Request
    responder: Responder
    service: str
    head: bytes
    """the request head as sent upstream"""
    deadline: float
    idempotent: bool
    request_id: str
    held: tuple[int, bytes, bool] | None = None
    """a 5xx the service answered itself on a retried attempt: (attempt, the whole response, close after),
    sent as it is when no retry follows"""


class Outcome(NamedTuple):
    """What one attempt came to: its kind (the metric's ``outcome``), the status to report, and whether to retry."""

    kind: str
    status: int
    retryable: bool = False


class Gateway:
    def __init__(self, config: GatewayConfig, loop: asyncio.AbstractEventLoop, base_dir: Path | None = None,
                 clock: Clock | None = None, asker: ReplicaAsker | None = None) -> None:
        self.loop = loop
        self.clock = clock or SystemClock()
        self.base_dir = base_dir or Path.cwd()
        self.shared = SharedState()
        self.metrics = GatewayMetrics()
        self.activator = Activator(loop, self.metrics, asker or ControllerAsker(lambda: self.config.controller))
        self.connections: set[ClientConnection] = set()
        self.rate_limits = guarding.RateLimits(config.settings.rate_limit, self.metrics)
        self.websockets = WebSockets(loop, self.metrics, config.settings.websockets)
        self.tracing: Tracing | None = None
        self.apply(config)

    # ------------------------------------------------------------------ config
    def apply(self, config: GatewayConfig) -> None:
        """Swap in a new config; an attempt in flight finishes, and any retry picks from the new tables."""
        settings = config.settings
        keys_path = Path(config.keys_db)
        keys = KeyCache(keys_path if keys_path.is_absolute() else self.base_dir / keys_path)
        keys.refresh()
        self.auth = Authenticator(settings.auth, keys, self.base_dir)
        self.config = config
        self.settings = settings
        self.tables = Tables(config, self.shared)
        self.limits = ConnectionLimits(settings.limits.max_header_bytes, settings.limits.max_body_bytes,
                                       config.header_timeout_s, config.idle_timeout_s, settings.limits.body_idle_timeout_s)
        self.websockets.settings = settings.websockets
        o = settings.outlier_detection
        self.outlier_policy = OutlierPolicy(o.consecutive_failures, o.base_ejection_s, o.max_ejection_s, o.max_ejection_percent)
        self.rate_limits.configure(settings.rate_limit)
        self.inflight_gauges = {name: self.metrics.inflight_gauge(name) for name in self.tables.services}
        services = self.tables.services
        self.activator.release(lambda name: name in services and bool(services[name].ready))
        self._apply_tracing(config)

    def _apply_tracing(self, config: GatewayConfig) -> None:
        self.tracing = retuned(self.tracing, config.tracing, config.app)
        self.metrics.span_counts = self.tracing.exporter.counts if self.tracing is not None else None

    def close(self) -> None:
        """Flush the spans still queued (on shutdown)."""
        if self.tracing is not None:
            self.tracing.close()

    def _observe(self, request: Request, client_ip: str, route: str, service: str, revision: str, status: int,
                 seconds: float) -> None:
        """Count one answered request, and end its span when tracing is on (its trace id becomes an exemplar)."""
        span = request.trace
        if span is None or self.tracing is None:
            self.metrics.observe_request(route, service, revision, status, seconds)
            return
        span.revision = revision
        self.metrics.observe_request(route, service, revision, status, seconds,
                                     span.trace_id if span.sampled else None)
        self.tracing.end(span, request.method, request.url, route, service, status, client_ip)

    # ------------------------------------------------------------------ logging and denials
    def log_exception(self, message: str, exc: BaseException | None) -> None:
        log.error("gateway_error", what=message, error_type=type(exc).__name__ if exc else None)

    def refuse(self, responder: Responder, request: Request | None, denial: Denial, request_id: str = "", *,
               path: str = "", rule: RouteRule | None = None, started: float | None = None) -> None:
        """The one path of a refused request: count it, log it (never a secret), answer it."""
        self.metrics.deny(denial.reason)
        plan = active_redaction()  # the hashed observability.redact fields the request carries (lichen.redacting)
        tokens = plan.request_fields(request.headers, request.url.partition(b"?")[2]) if plan.requests and request else None
        # one mapping, the line's own fields first: a token named like one (a hand-written rule) cannot break a refusal
        log.warning("request_denied", **line_fields({
            "status": denial.status, "reason": denial.reason, "client_ip": responder.client_ip,
            "method": request.method if request else None, "path": path[:200] or None,
            "request_id": request_id or None}, tokens))
        responder.refuse(denial, request_id)
        if started is not None and request is not None:
            self._observe(request, responder.client_ip, rule.prefix if rule else "", rule.service if rule else "", "",
                          denial.status, self.loop.time() - started)

    # ------------------------------------------------------------------ the request
    async def handle(self, request: Request, responder: Responder) -> None:
        loop = self.loop
        start = loop.time()
        # A generated id needs uniqueness, not secrecy: getrandbits avoids a getrandom() system call per request.
        request_id = request.request_id.decode("latin-1")[:128] if request.request_id else f"{random.getrandbits(64):016x}"
        if self.tracing is not None:
            # this request's task has a context of its own: every line logged for it carries the span's ids
            TRACE.set(span := self.tracing.begin(request.traceparent))
            request.trace = span
        path, _, query = request.url.decode("latin-1").partition("?")
        if request.reject is not None:
            self.refuse(responder, request, Denial(request.reject[0], "malformed_request", request.reject[1]), request_id)
            return
        if request.content_length is not None and request.transfer_encoding is not None:
            denial = Denial(400, "malformed_request", "both Content-Length and Transfer-Encoding")
            self.refuse(responder, request, denial, request_id)
            return
        if path == self.config.metrics_path or path.startswith("/-/"):
            answer_builtin(request, responder, path, request_id, self.config, self.metrics, self.tables.route_listing)
            return
        tables = self.tables
        host = request.host.decode("latin-1") if request.host else None
        header_map = (
            {k.decode("latin-1"): v.decode("latin-1") for k, v in request.headers} if tables.match_headers else {}
        )
        rule = match_route(tables.rules, host, path, header_map)
        if rule is None:
            denial = Denial(404, "no_route", f"no route matches {path[:200]}", extra={"routes": tables.route_listing})
            self.refuse(responder, request, denial, request_id, path=path, started=start)
            return
        denial, principal = (guarding.authenticate(self.auth, request, path, self.clock.wall()) if self.auth.enabled
                             else (None, None))
        if denial is None and self.rate_limits.active:
            denial = self.rate_limits.check(principal, responder.client_ip, loop.time())
        if denial is not None:
            self.refuse(responder, request, denial, request_id, path=path, rule=rule, started=start)
            return
        if responder.closed:
            return
        if request.upgrade:  # a WebSocket: held open, so it takes no max_inflight slot
            await self._tunnel(request, responder, rule, path, query, request_id, start)
            return
        if request.expect is not None and request.expect.lower() == b"100-continue" and request.has_body:
            responder.continue_()
        service = tables.services[rule.service]
        runtime = service.runtime
        # counted from here: a request waiting for an admission slot is demand the autoscaler must see
        gauge = self.inflight_gauges.get(rule.service)
        if gauge is not None:
            gauge.inc()
        admitted: bool | None = None
        try:
            if service.config.activation is not None and not service.ready:
                # at zero: held by the activator first, not against max_inflight (no replica has a slot to give)
                if not await self._hold(request, responder, rule, service, request_id, start):
                    return
                service = self.tables.services.get(rule.service, service)
                runtime = service.runtime
            admitted = guarding.take_slot(runtime, service.max_inflight, self.settings.admission)
            if admitted is None:  # at the limit, with room in the queue: wait for a slot
                admitted = await guarding.wait_for_slot(runtime, self.settings.admission, loop)
        finally:
            if not admitted and gauge is not None:
                gauge.dec()
        if not admitted:
            self.metrics.shed_one(rule.service)
            denial = guarding.shed(runtime, service.max_inflight, self.settings.admission)
            self.refuse(responder, request, denial, request_id, path=path, rule=rule, started=start)
            return
        try:
            proxied = self._proxy(request, responder, rule, service, path, query, request_id, start)
            status, revision = await (inject(effect_for(service.config.faults, self.clock.wall(), random.random),
                                             request, responder, request_id, proxied, rule.service)
                                      if service.config.faults else proxied)
        finally:
            if gauge is not None:
                gauge.dec()
            guarding.release_slot(runtime)
        if request.trace is None:  # tracing off: no call more than before it existed
            self.metrics.observe_request(rule.prefix, rule.service, revision, status, loop.time() - start)
        else:
            self._observe(request, responder.client_ip, rule.prefix, rule.service, revision, status,
                          loop.time() - start)

    async def _hold(self, request: Request, responder: Responder, rule: RouteRule, service: ServiceTable,
                    request_id: str, start: float) -> bool:
        """Hold a request for a service with no ready replica until one is (True), or answer it 503 (False)."""
        assert service.config.activation is not None
        held = await self.activator.hold(service.name, service.config.activation,
                                         start + (rule.timeout_s or service.timeout_s))
        if held == "released":
            return True
        refuse_held(responder, request, held, request_id)
        self._observe(request, responder.client_ip, rule.prefix, rule.service, "", 503, self.loop.time() - start)
        return False

    async def _tunnel(self, request: Request, responder: Responder, rule: RouteRule, path: str, query: str,
                      request_id: str, start: float) -> None:
        """A WebSocket upgrade: to one replica, then piped both ways (:mod:`lichen.gateway.tunnels`). For a service
        at zero it is held by the activator first, like any request (it counts against the limit once released)."""
        service = self.tables.services[rule.service]
        if service.config.activation is not None and not service.ready:
            if not await self._hold(request, responder, rule, service, request_id, start):
                responder.close_after = True
                return
            service = self.tables.services.get(rule.service, service)
        denial = self.websockets.admit(rule.service)
        if denial is not None:
            self.refuse(responder, request, denial, request_id, path=path, rule=rule, started=start)
            responder.close_after = True
            return
        target = rewrite_path(rule, path) + ("?" + query if query else "")
        head = request_head(request, target, request_id, request.request_id is None, responder.client_ip,
                            UPGRADE_WEBSOCKET)
        hash_key = service.hash_key(request.headers, path, query) if service.hash_kind else None

        def answered(status: int, revision: str) -> None:
            self._observe(request, responder.client_ip, rule.prefix, rule.service, revision, status,
                          self.loop.time() - start)

        await self.websockets.relay(request, responder, service, head,
                                    request.pinned.decode("latin-1") if request.pinned else None, hash_key,
                                    start + (rule.timeout_s or service.timeout_s), self.config.connect_timeout_s,
                                    self.settings.retries.attempts, request_id, answered)

    # ------------------------------------------------------------------ attempts and retries
    async def _proxy(self, request: Request, responder: Responder, rule: Any, service: ServiceTable, path: str,
                     query: str, request_id: str, start: float) -> tuple[int, str]:
        loop = self.loop
        retry_spec = self.settings.retries
        target = rewrite_path(rule, path) + ("?" + query if query else "")
        idempotent = request.method in IDEMPOTENT_METHODS or is_idempotent(
            request.method, target.partition("?")[0], service.idempotent_paths())
        pinned = request.pinned.decode("latin-1") if request.pinned else None
        hash_key = service.hash_key(request.headers, path, query) if service.hash_kind else None
        runtime = service.runtime
        runtime.budget = note_request(runtime.budget, start)
        call = Call(request, responder, service.name,
                    request_head(request, target, request_id, request.request_id is None, responder.client_ip),
                    start + (rule.timeout_s or service.timeout_s), idempotent, request_id)
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
            if upstream is None and not tried and service.config.activation is not None:
                # its last replica left while this request waited for a slot: hold it like one that found none
                held = await self.activator.hold(service.name, service.config.activation, call.deadline)
                if held == "released":
                    attempt -= 1
                    continue
                refuse_held(responder, request, held, request_id)
                return 503, ""
            if upstream is None:
                if not tried:
                    responder.send_simple(503, "no ready upstream for this service", request_id,
                                          headers=((b"retry-after", b"1"),))
                    return 503, ""
                break
            tried.append(upstream)
            last_revision = upstream.revision
            outcome = await self._attempt(call, service, upstream, attempt)
            self.metrics.attempt(service.name, upstream.revision, outcome.kind)
            last_status = outcome.status or 502
            if not outcome.retryable:
                if responder.started:
                    return outcome.status, upstream.revision
                break
            now = loop.time()
            if not can_retry(runtime.budget, now, retry_spec.budget_ratio):
                break
            runtime.budget = note_retry(runtime.budget, now)
            self.metrics.retry(service.name)
            pause = backoff_s(attempt, retry_spec.backoff_base_ms, retry_spec.backoff_max_ms, random.random())
            if loop.time() + pause >= call.deadline:
                break
            if pause > 0:
                await asyncio.sleep(pause)
        if responder.started:
            return last_status, last_revision
        body = request.body
        if call.held is not None and call.held[0] == attempt:  # the last try's answer was the service's own 5xx
            responder.start(call.held[1], close=call.held[2] or body.error != 0 or (request.has_body and not body.done))
            responder.finish()
            return last_status, last_revision
        status = last_status if last_status in (502, 503, 504) else 502
        responder.send_simple(status, "upstream unavailable" if status != 504 else "upstream timed out", request_id,
                              close=body.error != 0 or (request.has_body and not body.done))
        return status, last_revision

    async def _attempt(self, call: Call, service: ServiceTable, upstream: UpstreamState, attempt: int) -> Outcome:
        """One try on one replica: connect, send, await the head, forward.

        The common case takes no extra coroutine: a pooled connection is taken at once and a response that
        arrived whole is answered at once; only opening a connection and streaming a body are awaited steps.
        """
        loop = self.loop
        upstream.outstanding += 1
        try:
            now = loop.time()
            uconn: UpstreamConnection | Outcome | None = None
            if call.deadline > now:
                uconn = take_idle_connection(upstream, now)
            if uconn is None:
                uconn = await self._connect(call, service, upstream, attempt)
            if isinstance(uconn, Outcome):
                return uconn
            if call.request.body.error:
                release_connection(uconn, loop.time(), True)
                self._reject_body(call)
                return Outcome("client_error", call.request.body.error)
            exchange = self._send(call, uconn)
            head = await self._await_head(call, service, upstream, uconn, exchange, attempt)
            if isinstance(head, Outcome):
                return head
            answered = self._forward(call, service, upstream, uconn, exchange, head, attempt)
            if answered is not None:
                return answered
            return await self._stream(call, uconn, exchange, head)
        finally:
            upstream.outstanding -= 1

    def _may_retry(self, call: Call, attempt: int, *, connect_failed: bool = False, status: int | None = None) -> bool:
        body = call.request.body
        return should_retry(attempt=attempt, max_attempts=self.settings.retries.attempts, idempotent=call.idempotent,
                            connect_failed=connect_failed, status=status, response_started=call.responder.started,
                            body_replayable=body.replayable and body.error == 0)

    async def _connect(self, call: Call, service: ServiceTable, upstream: UpstreamState,
                       attempt: int) -> UpstreamConnection | Outcome:
        """A new connection (no pooled one was free); a failure to connect is retried: the replica never saw it."""
        loop = self.loop
        try:
            remaining = call.deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError
            return await open_connection(loop, upstream, min(remaining, self.config.connect_timeout_s))
        except (OSError, TimeoutError):
            self._record(service, upstream, True)
            return Outcome("connect_error", 502, self._may_retry(call, attempt, connect_failed=True))

    def _send(self, call: Call, uconn: UpstreamConnection) -> Exchange:
        """Write the request head and the body that arrived so far; the rest follows as it arrives."""
        request = call.request
        body = request.body
        exchange = Exchange(self.loop, request.method == "HEAD")
        uconn.begin(exchange)
        transport = uconn.transport
        if not request.has_body or body.error:
            transport.write(call.head)
            return exchange
        chunked = request.chunked
        parts = [call.head]
        for chunk in body.chunks:
            parts.append(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
        if body.done:
            if chunked:
                parts.append(LAST_CHUNK)
        else:  # the body is still arriving: forward it as it comes, and let a slow replica slow the client down
            body.attach(BodyWriter(uconn, chunked))
            uconn.flow.feed_from(call.responder.flow)
            call.responder.flow.resume_reading()
        transport.write(b"".join(parts))
        return exchange

    async def _await_head(self, call: Call, service: ServiceTable, upstream: UpstreamState, uconn: UpstreamConnection,
                          exchange: Exchange, attempt: int) -> int | Outcome:
        """The response status, once the head (and a small body, see BUFFER_WHOLE_BODY_BYTES) arrived in time."""
        loop = self.loop
        timer = loop.call_later(max(0.0, call.deadline - loop.time()), exchange.time_out)
        try:
            status = await exchange.head
            if not exchange.complete and not exchange.event_stream:
                await self._hold_body(exchange, max(0.0, call.deadline - loop.time()))
            return status
        except UpstreamReset:
            self._discard(uconn, call)
            self._record(service, upstream, True)
            return Outcome("reset", 502, self._may_retry(call, attempt))
        except TimeoutError:
            self._discard(uconn, call)
            self._record(service, upstream, True)
            return Outcome("timeout", 504)
        except RequestBodyError:
            self._discard(uconn, call)
            self._reject_body(call)
            return Outcome("client_error", call.request.body.error)
        except asyncio.CancelledError:
            self._discard(uconn, call)
            raise
        finally:
            timer.cancel()

    def _forward(self, call: Call, service: ServiceTable, upstream: UpstreamState, uconn: UpstreamConnection,
                 exchange: Exchange, status: int, attempt: int) -> Outcome | None:
        """Answer the client with the replica's response when it is whole (or refused, or retried);
        None: it is still arriving, and :meth:`_stream` forwards it."""
        loop, request, responder = self.loop, call.request, call.responder
        body = request.body
        failed = status >= 500
        self._record(service, upstream, failed)
        if body.error:
            self._discard(uconn, call)
            self._reject_body(call)
            return Outcome("ok", body.error)
        if failed and self._may_retry(call, attempt, status=status):
            if exchange.complete and not self.settings.mask_upstream_errors:
                call.held = (attempt, *self._whole_response(exchange, request, call.request_id))
            self._discard(uconn, call)
            return Outcome("http_5xx", status, True)
        if failed and self.settings.mask_upstream_errors:
            # The status and Retry-After go to the client; the upstream's body (a traceback?) does not.
            retry_after = [(b"retry-after", v) for k, v in exchange.headers if k.lower() == b"retry-after"]
            if exchange.complete:
                release_connection(uconn, loop.time(), exchange.keep_alive and body.done and not body.error)
            else:
                self._discard(uconn, call)
            responder.send_simple(status, "upstream error", call.request_id, headers=retry_after[:1],
                                  close=not request.keep_alive or not body.done)
            return Outcome("http_5xx", status)
        if not exchange.complete:
            return None
        # the whole response is here already: one write, no streaming machinery
        data, close = self._whole_response(exchange, request, call.request_id)
        responder.start(data, close=close)
        responder.finish()
        release_connection(uconn, loop.time(), exchange.keep_alive and body.done and body.error == 0)
        return Outcome("http_5xx" if failed else "ok", status)

    def _whole_response(self, exchange: Exchange, request: Request, request_id: str) -> tuple[bytes, bool]:
        """A response that arrived whole, as the client gets it (one write), and whether to close after it."""
        head, chunk_out, close = response_head(exchange, request, request_id)
        pending = exchange.pending
        exchange.pending = []
        if chunk_out:
            pending = [b"%x\r\n%b\r\n" % (len(c), c) for c in pending if c]
        return b"".join([head, *pending, LAST_CHUNK if chunk_out else b""]), close

    async def _stream(self, call: Call, uconn: UpstreamConnection, exchange: Exchange, status: int) -> Outcome:
        """Forward a response that is still arriving, as it arrives."""
        request, responder = call.request, call.responder
        body = request.body
        head, chunk_out, close = response_head(exchange, request, call.request_id)
        pending = exchange.pending
        exchange.pending = []
        if chunk_out:
            pending = [b"%x\r\n%b\r\n" % (len(c), c) for c in pending if c]
        responder.start(b"".join([head, *pending]), close=close)
        responder.flow.feed_from(uconn.flow)  # a client that reads slowly pauses reading from the replica
        exchange.start_forwarding(responder.write_chunk if chunk_out else responder.write)
        try:
            keep_alive = await exchange.done
        except UpstreamReset:
            self._discard(uconn, call)
            return Outcome("reset", status)  # the response stays unfinished: the client sees the connection close
        except asyncio.CancelledError:
            self._discard(uconn, call)
            raise
        finally:
            responder.flow.feed_from(None)
        responder.finish(LAST_CHUNK if chunk_out else b"")
        release_connection(uconn, self.loop.time(), keep_alive and body.done and body.error == 0)
        return Outcome("http_5xx" if status >= 500 else "ok", status)

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

    # ------------------------------------------------------------------ helpers of the attempt
    def _record(self, service: ServiceTable, upstream: UpstreamState, failed: bool) -> None:
        if upstream.retired:
            return  # it left the config (a planned stop): its failures say nothing about its health
        state, now = upstream.outlier, self.loop.time()
        if failed:
            new_state, ejected = record_failure(
                state, now, self.outlier_policy, service.ejected_count(now), len(service.ready)
            )
            service.set_outlier_state(upstream, new_state)
            if ejected:
                self.metrics.ejection(service.name, upstream.id)
                until = upstream.outlier.ejected_until
                log.warning("upstream_ejected", service=service.name, upstream=upstream.id,
                            for_s=round(until - now, 3) if until else None)
        elif state.consecutive_failures or state.ejections or state.ejected_until is not None:
            upstream.outlier = record_success(state, now, self.outlier_policy)

    def _reject_body(self, call: Call) -> None:
        status = call.request.body.error
        reason, message = _BODY_ERRORS.get(status, ("malformed_request", "malformed request body"))
        if call.responder.started:
            self.metrics.deny(reason)
            call.responder.close_after = True
        else:
            self.refuse(call.responder, call.request, Denial(status, reason, message), call.request_id)

    def _discard(self, uconn: UpstreamConnection, call: Call) -> None:
        """Give up on an exchange: its futures are settled and its connection is closed, never pooled."""
        call.request.body.detach()
        exchange = uconn.exchange
        if exchange is not None:
            for future in (exchange.head, exchange.done):
                if future.done() and not future.cancelled():
                    future.exception()
                else:
                    future.cancel()
        release_connection(uconn, self.loop.time(), False)
