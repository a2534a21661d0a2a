"""The ASGI wrapper every replica runs behind, for Services and plain ASGI apps alike.

:class:`ReplicaApp` answers the built-ins itself (``/healthz``,
``/readyz``, ``/metrics``, ``/.well-known/lichen``), refuses requests that
still arrive once the server is stopping, and for every other request assigns a request id (echoed in
``X-Request-ID``), counts it in the metrics and writes one JSON log line.
It forwards lifespan events to the wrapped app and runs the service's
``setup()`` in a thread once the server is up, so the loop keeps answering
probes during a slow setup.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from random import getrandbits as _random_bits
from typing import Any

from prometheus_client import CollectorRegistry
from starlette.routing import Match

from lichen.logs import TRACE, active_redaction, get_logger
from lichen.redacting import BODY_MAX_BYTES, Hashed, line_fields
from lichen.sdk.endpoints import IDEMPOTENT_METHODS
from lichen.sdk.instruments import METRICS_CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE, ReplicaMetrics
from lichen.sdk.limits import RESPONSE_START, ResponseStart
from lichen.sdk.logs import ACCESS_LOGGER, REQUEST_ID, direct_handler, request_line
from lichen.sdk.settings import ReplicaSettings
from lichen.sdk.traces import INCOMING, ReplicaTracer, incoming, start_tracing

ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]], Callable[[dict[str, Any]], Awaitable[None]]], Awaitable[None]]
Scope = dict[str, Any]

log = get_logger("lichen.sdk")
access_log = get_logger(ACCESS_LOGGER)

_JSON = b"application/json"
_REQUEST_ID_HEADER = b"x-request-id"
_MAX_REQUEST_ID_LEN = 128
# How long /readyz waits for the ready() hook; past it the replica reports not ready (a probe's timeout is ~1 s).
READY_HOOK_WAIT_S = 0.8


class ReplicaState:
    """Where this replica is in its life; read by ``/readyz`` and ``lichen_ready``."""

    def __init__(self, needs_setup: bool) -> None:
        self.started = False
        self.setup_done = not needs_setup
        self.setup_error: BaseException | None = None
        self.draining = False
        """not ready (SIGTERM received); requests are still served during the drain window"""
        self.refusing = False
        """the server is stopping: a request that still arrives gets 503"""
        self.hook_ok = True
        self.hook_reason = ""

    def is_ready(self) -> bool:
        return (
            self.started and self.setup_done and self.setup_error is None and not self.draining and self.hook_ok
        )

    def reason(self) -> str:
        if self.draining:
            return "draining: the replica is shutting down"
        if self.setup_error is not None:
            return f"setup() failed: {type(self.setup_error).__name__}: {self.setup_error}"
        if not self.started:
            return "starting"
        if not self.setup_done:
            return "setup() is running"
        if not self.hook_ok:
            return self.hook_reason or "ready() returned false"
        return "ready"


class _InnerLifespan:
    """Drives the wrapped app's lifespan protocol from inside ours."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self._to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._supported = True

    async def startup(self, scope: Scope) -> None:
        self._task = asyncio.create_task(self._run(dict(scope)))
        await self._to_app.put({"type": "lifespan.startup"})
        reply = await self._from_app.get()
        if reply["type"] == "lifespan.startup.failed":
            raise RuntimeError(reply.get("message") or "the wrapped app's startup failed")

    async def shutdown(self) -> None:
        if not self._supported or self._task is None or self._task.done():
            return
        await self._to_app.put({"type": "lifespan.shutdown"})
        reply = await self._from_app.get()
        if reply["type"] == "lifespan.shutdown.failed":
            raise RuntimeError(reply.get("message") or "the wrapped app's shutdown failed")

    async def _run(self, scope: Scope) -> None:
        started = False

        async def send(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"].startswith("lifespan.startup")
            await self._from_app.put(message)

        try:
            await self._app(scope, self._to_app.get, send)
        except BaseException as exc:  # an app without lifespan support raises on the scope type
            if not started:
                self._supported = False
                await self._from_app.put({"type": "lifespan.startup.complete"})
            else:
                await self._from_app.put({"type": "lifespan.shutdown.failed", "message": str(exc)})
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        # The app returned: it ignores lifespan, or it is done. Nobody must wait for it.
        if not started:
            self._supported = False
            await self._from_app.put({"type": "lifespan.startup.complete"})
        else:
            await self._from_app.put({"type": "lifespan.shutdown.complete"})


class ReplicaApp:
    """One replica's ASGI app: built-ins, request ids, metrics and JSON logs around ``inner``."""

    def __init__(
        self,
        inner: ASGIApp,
        *,
        registry: CollectorRegistry | None = None,
        name: str = "app",
        kind: str = "asgi",
        endpoints: list[dict[str, Any]] | None = None,
        setup: Callable[[], None] | None = None,
        ready: Callable[[], Any] | None = None,
        teardown: Callable[[], None] | None = None,
        routes: list[Any] | None = None,
        metrics_path: str | None = None,
        slo_latencies_ms: tuple[float, ...] | None = None,
    ) -> None:
        self.inner = inner
        self.name = name
        self.state = ReplicaState(needs_setup=setup is not None)
        settings = ReplicaSettings.from_env()
        metrics_path = settings.metrics_path if metrics_path is None else metrics_path
        slo_latencies_ms = settings.slo_latency_ms if slo_latencies_ms is None else slo_latencies_ms
        self.tracer: ReplicaTracer | None = start_tracing(settings)
        self.metrics_path = metrics_path
        latencies = slo_latencies_ms
        self.metrics = ReplicaMetrics(registry or CollectorRegistry(auto_describe=True), self.state.is_ready, latencies)
        self.setup_finished = threading.Event()
        self.on_setup_failed: Callable[[BaseException], None] | None = None
        self.service: Any = None  # the Service instance, when serving one
        # lichen serve starts setup() once the socket listens; other servers at lifespan startup.
        self.defer_setup = False
        self._setup_started = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.executor: Any = None  # its sync-handler thread pool, shut down after serving
        self._setup = setup
        self._ready = ready
        self._teardown = teardown
        self._well_known = json.dumps(
            {"name": name, "kind": kind, "endpoints": endpoints or [],
             "builtins": ["/healthz", "/readyz", self.metrics_path, "/.well-known/lichen", "/openapi.json"]},
            separators=(",", ":"),
        ).encode()
        self._builtins: dict[str, Callable[[Scope, Any, Any], Awaitable[None]]] = {
            "/healthz": self._healthz,
            "/readyz": self._readyz,
            self.metrics_path: self._metrics,
            "/.well-known/lichen": self._describe,
        }
        self._inner_lifespan: _InnerLifespan | None = None
        self._hook_call: asyncio.Future[Any] | None = None
        # A plain app has no endpoint gates; count its in-flight requests by route here.
        self._routes = [(route, self.metrics.declare_endpoint(route.path, None)) for route in routes or ()]

    # ------------------------------------------------------------------ lifecycle

    def begin_draining(self) -> None:
        """Report not ready and refuse new requests (called once the server stops)."""
        self.state.refusing = True
        if not self.state.draining:
            self.state.draining = True
            log.info("draining", ready=False, refusing_new_requests=True)

    def start_setup(self) -> None:
        """Run ``setup()`` in a thread (once); the loop keeps answering probes meanwhile."""
        if self._setup_started:
            return
        self._setup_started = True
        try:
            self._loop = asyncio.get_running_loop()  # where an `async def setup()` runs
        except RuntimeError:
            self._loop = None
        if self._setup is not None:
            threading.Thread(target=self._run_setup, name="lichen-setup", daemon=True).start()
        else:
            self.setup_finished.set()

    def _run_setup(self) -> None:
        assert self._setup is not None
        started = time.perf_counter()
        log.info("setup_started")
        try:
            result = self._setup()
            if inspect.isawaitable(result):  # `async def setup()`: run it on the server's loop, wait here
                if self._loop is None:
                    asyncio.run(_awaited(result))
                else:
                    asyncio.run_coroutine_threadsafe(_awaited(result), self._loop).result()
        except BaseException as exc:
            self.state.setup_error = exc
            log.error("setup_failed", exc_info=exc)  # error: "Type: message", and the traceback
            self.setup_finished.set()
            if self.on_setup_failed is not None:
                self.on_setup_failed(exc)
            return
        self.state.setup_done = True
        self.setup_finished.set()
        log.info("setup_finished", setup_ms=round((time.perf_counter() - started) * 1000, 1))

    async def _lifespan(self, scope: Scope, receive: Any, send: Any) -> None:
        message = await receive()
        if message["type"] != "lifespan.startup":  # pragma: no cover - protocol violation
            return
        self._inner_lifespan = _InnerLifespan(self.inner)
        try:
            await self._inner_lifespan.startup(scope)
        except Exception as exc:
            log.error("startup_failed", error=f"{type(exc).__name__}: {exc}")
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        self.state.started = True
        if not self.defer_setup:
            self.start_setup()
        await send({"type": "lifespan.startup.complete"})

        message = await receive()
        self.begin_draining()
        failure = ""
        try:
            await self._inner_lifespan.shutdown()
        except Exception as exc:
            failure = str(exc)
        if self._teardown is not None and self.state.setup_done:
            try:
                if inspect.iscoroutinefunction(self._teardown):
                    await self._teardown()
                else:
                    await asyncio.get_running_loop().run_in_executor(None, self._teardown)
                log.info("teardown_finished")
            except Exception as exc:
                log.error("teardown_failed", exc_info=exc)
                failure = failure or f"teardown() failed: {exc}"
        if self.tracer is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.tracer.shutdown)  # the spans still queued
        if failure:
            await send({"type": "lifespan.shutdown.failed", "message": failure})
        else:
            await send({"type": "lifespan.shutdown.complete"})

    # ------------------------------------------------------------------ built-ins

    async def _healthz(self, scope: Scope, receive: Any, send: Any) -> None:
        await _send_bytes(send, 200, b'{"status":"ok"}', _JSON)

    def _start_ready_hook(self) -> asyncio.Future[Any]:
        """The ``ready()`` call in flight, started if none is: never more than one at a time.

        A sync hook runs on its own daemon thread, so one that hangs holds no
        pool thread and cannot keep the process from exiting.
        """
        if self._hook_call is not None and not self._hook_call.done():
            return self._hook_call
        assert self._ready is not None
        hook = self._ready
        loop = asyncio.get_running_loop()
        call: asyncio.Future[Any]
        if inspect.iscoroutinefunction(hook):
            call = asyncio.ensure_future(hook())
        else:
            call = loop.create_future()

            def run() -> None:
                try:
                    verdict = hook()
                except Exception as exc:
                    loop.call_soon_threadsafe(_settle, call, None, exc)
                else:
                    loop.call_soon_threadsafe(_settle, call, verdict, None)

            threading.Thread(target=run, name="lichen-ready", daemon=True).start()
        call.add_done_callback(self._record_ready_hook)
        self._hook_call = call
        return call

    def _record_ready_hook(self, call: asyncio.Future[Any]) -> None:
        state = self.state
        if call.cancelled():
            return
        error = call.exception()
        if error is not None:
            state.hook_ok, state.hook_reason = False, f"ready() raised {type(error).__name__}: {error}"
        else:
            verdict = call.result()
            said = "false" if verdict is False else repr(verdict)  # None: a hook that forgot to return
            state.hook_ok, state.hook_reason = bool(verdict), "" if verdict else f"ready() returned {said}"

    async def _refresh_ready_hook(self, *, wait: bool = True) -> None:
        state = self.state
        if self._ready is None or not (state.started and state.setup_done) or state.draining or state.setup_error:
            return
        call = self._start_ready_hook()
        if not wait:
            return
        try:
            await asyncio.wait_for(asyncio.shield(call), READY_HOOK_WAIT_S)
        except asyncio.TimeoutError:
            state.hook_ok = False
            state.hook_reason = f"ready() has not returned within {READY_HOOK_WAIT_S:g} s"
        except Exception:  # noqa: BLE001 - recorded by _record_ready_hook
            pass

    async def _readyz(self, scope: Scope, receive: Any, send: Any) -> None:
        await self._refresh_ready_hook()
        ready = self.state.is_ready()
        body = json.dumps({"ready": ready, "reason": self.state.reason()}).encode()
        await _send_bytes(send, 200 if ready else 503, body, _JSON)

    async def _metrics(self, scope: Scope, receive: Any, send: Any) -> None:
        # A scrape never waits on the user's hook: lichen_ready shows its latest verdict.
        await self._refresh_ready_hook(wait=False)
        openmetrics = any(name == b"accept" and b"application/openmetrics-text" in value
                          for name, value in scope["headers"])  # the format that carries exemplars
        await _send_bytes(send, 200, self.metrics.render(openmetrics),
                          (OPENMETRICS_CONTENT_TYPE if openmetrics else METRICS_CONTENT_TYPE).encode())

    async def _describe(self, scope: Scope, receive: Any, send: Any) -> None:
        await _send_bytes(send, 200, self._well_known, _JSON)

    # ------------------------------------------------------------------ requests

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind == "lifespan":
                await self._lifespan(scope, receive, send)
            else:
                await self.inner(scope, receive, send)
            return
        builtin = self._builtins.get(scope["path"])
        if builtin is not None:
            await builtin(scope, receive, send)
            if access_log.isEnabledFor(logging.DEBUG):
                access_log.debug("request", method=scope["method"], path=scope["path"])
            return
        if self.state.refusing:
            await _send_bytes(
                send, 503, b'{"detail":"replica is shutting down"}', _JSON, [(b"connection", b"close"), (b"retry-after", b"1")]
            )
            return
        await self._handle(scope, receive, send)

    async def _handle(self, scope: Scope, receive: Any, send: Any) -> None:
        request_id = _request_id(scope["headers"])
        id_header = (_REQUEST_ID_HEADER, request_id.encode())
        response = ResponseStart()
        scope[RESPONSE_START] = response  # an endpoint gate reads whether the response started here
        started = time.perf_counter()

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                response.status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        plan = active_redaction()
        kept: _BodyKeeper | None = None
        if plan.body and scope["method"] in _BODY_METHODS:  # only when a rule hashes a body key
            kept = _BodyKeeper(receive)
            receive = kept
        token = REQUEST_ID.set(request_id)
        found = incoming(scope["headers"])
        incoming_token = INCOMING.set(found) if found is not None else None
        tracer, span = self.tracer, None
        if tracer is not None:
            span, span_token, ids = tracer.start(scope["method"], scope["path"], found)
            trace_token = TRACE.set(ids)
        else:
            trace_token = TRACE.set(found) if found is not None else None
        status = 0  # set here when the request did not end with the response it sent
        failed: BaseException | None = None
        inflight = self._match_inflight(scope) if self._routes else None
        if inflight is not None:
            inflight.inc()
        try:
            await self.inner(scope, receive, send_with_id)
        except asyncio.CancelledError:
            status = response.status or 499  # nginx's "client closed request": it went away, or shutdown cut it
            raise
        except Exception as exc:
            failed = exc
            if response.status == 0:
                await _send_bytes(send_with_id, 500, b'{"detail":"internal server error"}', _JSON)
            status = 500
        finally:
            if inflight is not None:
                inflight.dec()
            REQUEST_ID.reset(token)
            status = status or response.status
            latency_s = time.perf_counter() - started
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "other"
            method = scope["method"]
            log_ids = TRACE.get().log_ids() if trace_token is not None else None  # type: ignore[union-attr]
            exemplar = None
            if span is not None:
                tracer.end(span, span_token, method, endpoint, status or 500)  # type: ignore[union-attr]
                exemplar = log_ids[0] if log_ids and span.get_span_context().trace_flags.sampled else None
            self.metrics.observe(endpoint, method, status or 500, latency_s, exemplar)
            # never raises, whatever the client sent (a body nested past the recursion limit has no token)
            tokens = (plan.request_fields(scope["headers"], scope.get("query_string", b""),
                                          kept.body() if kept is not None else None) if plan.requests else None)
            # A failure is logged even when request lines are off (--log-level warning or error). The fields go
            # as one mapping with the line's own first: a token cannot collide with them, nor with exc_info.
            if failed is not None:
                access_log.error("request_failed", exc_info=failed, **line_fields({
                    "request_id": request_id, "method": method, "path": scope["path"], "endpoint": endpoint,
                    "status": 500, "latency_ms": round(latency_s * 1000, 2)}, tokens))
            else:
                _log_request(request_id, method, scope["path"], endpoint, status or 500, latency_s, tokens, log_ids)
            if trace_token is not None:
                TRACE.reset(trace_token)
            if incoming_token is not None:
                INCOMING.reset(incoming_token)

    def _match_inflight(self, scope: Scope) -> Any:
        for route, gauge in self._routes:
            if route.matches(scope)[0] is not Match.NONE:
                return gauge
        return None


def _log_request(request_id: str, method: str, path: str, endpoint: str, status: int, latency_s: float,
                 tokens: dict[str, Hashed] | None = None, trace_ids: tuple[str, str] | None = None) -> None:
    """One ``request`` line; straight to the replica's handler when nothing else would see the record.

    ``tokens``: the hashed ``observability.redact`` fields the request carries (:mod:`lichen.redacting`).
    """
    logger = access_log.logger
    handler = direct_handler(logger, logging.INFO)
    if handler is None:
        if logger.isEnabledFor(logging.INFO):
            access_log.info("request", **line_fields({
                "request_id": request_id, "method": method, "path": path, "endpoint": endpoint, "status": status,
                "latency_ms": round(latency_s * 1000, 2)}, tokens))
        return
    handler.emit_line(request_line(handler.formatter, time.time(), request_id, method, path,  # type: ignore[arg-type]
                                   endpoint, status, round(latency_s * 1000, 2), tokens, trace_ids))


_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class _BodyKeeper:
    """The app's ``receive``, keeping the first 64 KiB of the body for the request line's redacted tokens."""

    __slots__ = ("parts", "receive", "size")

    def __init__(self, receive: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        self.receive = receive
        self.parts: list[bytes] = []
        self.size = 0

    async def __call__(self) -> dict[str, Any]:
        message = await self.receive()
        if message.get("type") == "http.request":
            chunk = message.get("body", b"")
            self.size += len(chunk)
            if self.size <= BODY_MAX_BYTES:
                self.parts.append(chunk)
        return message

    def body(self) -> bytes | None:
        """The body the app read, or None when it was larger than what is searched (or never read)."""
        return b"".join(self.parts) if self.parts and self.size <= BODY_MAX_BYTES else None


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _settle(call: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if call.done():
        return
    if error is not None:
        call.set_exception(error)
    else:
        call.set_result(result)


_ANSWERED_HERE = ("/healthz", "/readyz", "/.well-known/lichen")
"""paths the wrapper answers itself, whatever the app behind it serves (and the metrics path)"""
def _request_id(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == _REQUEST_ID_HEADER:
            if 0 < len(value) <= _MAX_REQUEST_ID_LEN:
                text = value.decode("latin-1")
                if text.isascii() and text.isprintable():
                    return text
            break
    return f"{_random_bits(64):016x}"  # an id, not a secret: the Mersenne Twister is enough and 5x cheaper


async def _send_bytes(
    send: Any, status: int, body: bytes, content_type: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def wrap_asgi(app: ASGIApp, name: str = "app", settings: ReplicaSettings | None = None) -> ReplicaApp:
    """Give a plain ASGI app (FastAPI, Starlette, ...) the replica built-ins, metrics and logs.

    Ready once the app's own lifespan startup finished. Endpoints listed at
    ``/.well-known/lichen`` are its routes when it has a Starlette router.
    ``settings`` default to :meth:`ReplicaSettings.from_env`.
    """
    settings = ReplicaSettings.from_env() if settings is None else settings
    endpoints: list[dict[str, Any]] = []
    routes: list[Any] = []
    answered = (*_ANSWERED_HERE, settings.metrics_path)
    for route in getattr(app, "routes", ()) or ():
        path, methods = getattr(route, "path", None), getattr(route, "methods", None)
        if path in answered:
            log.warning("builtin_route_shadowed", app=name, route=path,
                        reason="Lichen answers this path itself on every replica; the app's own route is not reached")
        if not path or not methods or path in answered or path == "/openapi.json" or path.startswith(("/docs", "/redoc")):
            continue
        if callable(getattr(route, "matches", None)):
            routes.append(route)
        for method in sorted(methods - {"HEAD"} if "GET" in methods else methods):
            endpoints.append(
                {
                    "path": path,
                    "method": method,
                    "timeout_s": None,
                    "max_concurrency": None,
                    "idempotent": method in IDEMPOTENT_METHODS,
                    "stream": False,
                }
            )
    return ReplicaApp(app, name=name, kind="asgi", endpoints=endpoints, routes=routes,
                      metrics_path=settings.metrics_path, slo_latencies_ms=settings.slo_latency_ms)
