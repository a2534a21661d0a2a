"""Turning a :class:`~lichen.Service` into a FastAPI app behind a :class:`ReplicaApp`.

Each ``@endpoint`` method becomes a FastAPI route (so bodies are validated
by pydantic and a bad one gets a 422 naming the field) whose ASGI app is
wrapped by an :class:`~lichen.sdk.limits.EndpointGate`. Sync handlers run
on a dedicated thread pool sized to the sum of their concurrency limits, so
an admitted request never queues for a thread; async handlers run on the
event loop. ``stream=True`` handlers yield items sent as Server-Sent Events.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import json
import typing
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Annotated, Any

from fastapi import FastAPI, Query
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import FastAPIError, RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response, StreamingResponse

from lichen import __version__
from lichen.errors import ConfigError
from lichen.logs import get_logger
from lichen.sdk.endpoints import EndpointSpec, declared_endpoints
from lichen.sdk.limits import CURRENT_TICKET, EndpointGate
from lichen.sdk.logs import current_request_id
from lichen.sdk.services import Service
from lichen.sdk.settings import ReplicaSettings
from lichen.sdk.wrapping import ReplicaApp

log = get_logger("lichen.sdk")
_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
_END = object()


# FastAPI 0.165 and later record a server span per request of their own once a tracer provider is set; the
# replica's span (lichen.sdk.traces) is that span already, so a Service's app does not add a second one.
_NO_NATIVE_SPANS = ({"telemetry": {"tracing": False}}
                    if "telemetry" in inspect.signature(FastAPI.__init__).parameters else {})

def build_service_app(target: type[Service] | Service, settings: ReplicaSettings | None = None) -> ReplicaApp:
    """The ASGI app serving one replica of ``target`` (a Service subclass or instance).

    ``settings`` (default: :meth:`ReplicaSettings.from_env`) give the endpoints'
    default limits and where the metrics are served.
    """
    settings = ReplicaSettings.from_env() if settings is None else settings
    if isinstance(target, type):
        where = f"{target.__module__}:{target.__qualname__}"
        try:
            service = target()
        except Exception as exc:
            raise ConfigError(f"{target.__qualname__}() raised {type(exc).__name__}: {exc}", where=where) from exc
    else:
        service = target
    cls = type(service)
    where = f"{cls.__module__}:{cls.__qualname__}"
    declared = declared_endpoints(cls)
    if not declared:
        raise ConfigError("declares no @endpoint methods", where=where)
    specs = [(attr, spec.resolved(settings.timeout_s, settings.max_concurrency)) for attr, spec in declared]
    for attr, spec in specs:
        if spec.path == settings.metrics_path:
            raise ConfigError(f"{spec.path} is where this replica serves its metrics (the service's metrics_path); "
                              "move the endpoint or the metrics", where=f"{where}.{attr}")

    threads = sum(spec.max_concurrency or 1 for attr, spec in specs if not _is_async(getattr(service, attr)))
    executor = ThreadPoolExecutor(max_workers=max(threads, 1), thread_name_prefix="lichen-handler")
    api = FastAPI(title=cls.__name__, version=__version__, redoc_url=None, description=inspect.getdoc(cls) or "",
                  **_NO_NATIVE_SPANS)
    api.add_exception_handler(Exception, _internal_error)
    api.add_exception_handler(RequestValidationError, _invalid_request)
    overrides_ready = getattr(cls, "ready", Service.ready) is not Service.ready
    replica = ReplicaApp(
        api,
        registry=Service.metrics.fget(service),  # type: ignore[attr-defined]  # even if a subclass names a method 'metrics'
        name=cls.__name__,
        kind="service",
        endpoints=[spec.describe() for _, spec in specs],
        setup=service.setup,
        ready=service.ready if overrides_ready else None,
        teardown=service.teardown,
        metrics_path=settings.metrics_path,
        slo_latencies_ms=settings.slo_latency_ms,
    )
    replica.service = service
    replica.executor = executor
    for attr, spec in specs:
        method = getattr(service, attr)
        handler = _route_handler(method, spec, executor, where=f"{where}.{attr}")
        _add_route(api, spec, handler, attr, description=inspect.getdoc(method) or "", where=f"{where}.{attr}")
        route = api.router.routes[-1]
        assert spec.max_concurrency is not None and spec.timeout_s is not None
        route.app = EndpointGate(  # type: ignore[attr-defined]
            route.app,  # type: ignore[attr-defined]
            path=spec.path,
            max_concurrency=spec.max_concurrency,
            timeout_s=spec.timeout_s,
            stream=spec.stream,
            inflight=replica.metrics.declare_endpoint(spec.path, spec.max_concurrency),
            threads=spec.stream or not _is_async(method),
        )
    return replica


async def _internal_error(request: Any, exc: Exception) -> Response:
    """A handler's unexpected exception: JSON like every other error, with the request id, nothing internal.

    Starlette re-raises it after this answer, so the replica wrapper logs it
    in full under the same request id.
    """
    return JSONResponse({"detail": "internal server error", "request_id": current_request_id()}, status_code=500)


async def _invalid_request(request: Any, exc: RequestValidationError) -> Response:
    """FastAPI's 422, plus a hint when the body was not sent as JSON at all (the usual ``curl -d`` slip)."""
    errors = jsonable_encoder(exc.errors())
    content: dict[str, Any] = {"detail": errors}
    raw_body = any(
        tuple(e.get("loc", ()))[:1] == ("body",) and isinstance(e.get("input"), (str, bytes))
        and e.get("type") in ("model_attributes_type", "dict_type", "list_type")
        for e in errors
    )
    if raw_body:
        sent = request.headers.get("content-type") or "no Content-Type"
        content["hint"] = f"the body must be JSON sent with 'Content-Type: application/json' (got {sent})"
    return JSONResponse(content, status_code=422)


def _add_route(api: FastAPI, spec: EndpointSpec, handler: Callable[..., Any], attr: str, *, description: str,
               where: str) -> None:
    """Add one route; its return annotation becomes the response model when pydantic can describe it.

    As in FastAPI, an unannotated handler or one annotated with a ``Response``
    class has no response model; so has one whose annotation pydantic cannot
    describe (``dict | Response``), instead of failing to start.
    """
    common: dict[str, Any] = {"methods": [spec.method], "name": attr, "description": description}
    if spec.stream:
        api.add_api_route(spec.path, handler, response_model=None, **common)
        return
    try:
        api.add_api_route(spec.path, handler, **common)  # FastAPI infers the model from the signature
    except FastAPIError as exc:
        log.warning("response_model_skipped", endpoint=where, reason=str(exc).split("!", 1)[0],
                    detail="the return annotation is not a pydantic type; served without a response model")
        api.add_api_route(spec.path, handler, response_model=None, **common)
    except (AssertionError, TypeError, ValueError) as exc:  # FastAPI's own complaints about parameters
        raise ConfigError(f"cannot serve it as an endpoint: {exc}", where=where) from exc


def _is_async(method: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(method) or inspect.isasyncgenfunction(method)


def _route_handler(
    method: Callable[..., Any], spec: EndpointSpec, executor: ThreadPoolExecutor, *, where: str
) -> Callable[..., Any]:
    """An ``async def`` with ``method``'s resolved signature that FastAPI can call."""
    try:
        hints = typing.get_type_hints(method, include_extras=True)
    except Exception as exc:
        raise ConfigError(f"cannot resolve its type annotations: {exc}", where=where) from exc
    signature = inspect.signature(method)
    parameters = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values()]
    if spec.method in _BODILESS_METHODS:
        parameters = _models_from_query(parameters)
    returns = inspect.Signature.empty if spec.stream else hints.get("return", signature.return_annotation)
    if returns is None:
        returns = inspect.Signature.empty

    if spec.stream:

        async def handler(**kwargs: Any) -> Any:
            return await _open_stream(method, kwargs, executor, spec.path)

    elif inspect.iscoroutinefunction(method):

        async def handler(**kwargs: Any) -> Any:
            return await method(**kwargs)

    else:

        async def handler(**kwargs: Any) -> Any:
            return await _in_thread(executor, functools.partial(method, **kwargs))

    handler.__signature__ = signature.replace(parameters=parameters, return_annotation=returns)  # type: ignore[attr-defined]
    handler.__name__ = getattr(method, "__name__", "handler")
    handler.__doc__ = getattr(method, "__doc__", None)
    return handler


# Methods whose requests carry no body in practice (clients and proxies drop one).
_BODILESS_METHODS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})


def _models_from_query(parameters: list[inspect.Parameter]) -> list[inspect.Parameter]:
    """On a GET-like endpoint, one plain pydantic-model parameter is read from the query string.

    FastAPI would expect it as a JSON body, which a GET request cannot
    usefully carry; ``def search(self, params: Search)`` on GET means
    ``/search?q=tea&limit=3``. An explicit ``Query()``/``Body()`` default is kept.
    """
    models = [
        p for p in parameters
        if p.default is inspect.Parameter.empty and isinstance(p.annotation, type) and issubclass(p.annotation, BaseModel)
    ]
    if len(models) != 1:
        return parameters
    model = models[0]
    return [p.replace(annotation=Annotated[p.annotation, Query()]) if p is model else p for p in parameters]


def _in_thread(executor: ThreadPoolExecutor, call: Callable[[], Any]) -> asyncio.Future[Any]:
    """Run ``call`` on the handler pool; the request's slot stays held until the thread returns."""
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    future: Future[Any] = executor.submit(context.run, call)
    ticket = CURRENT_TICKET.get()
    if ticket is not None:
        ticket.hold()

        def released(_future: Future[Any]) -> None:
            try:
                loop.call_soon_threadsafe(ticket.release)
            except RuntimeError:  # the loop closed during shutdown; nothing left to count
                pass

        future.add_done_callback(released)
    return asyncio.wrap_future(future)


async def _open_stream(
    method: Callable[..., Any], kwargs: dict[str, Any], executor: ThreadPoolExecutor, path: str
) -> Response:
    """Call a stream handler and answer with SSE once its first item is ready (so a slow start is a 504)."""
    if inspect.isasyncgenfunction(method) or inspect.isgeneratorfunction(method):
        source = method(**kwargs)
    elif inspect.iscoroutinefunction(method):
        source = await method(**kwargs)
    else:
        source = await _in_thread(executor, functools.partial(method, **kwargs))
    if isinstance(source, Response):
        return source
    items = _as_async(source, executor)
    first = await anext(items, _END)

    async def events() -> AsyncIterator[bytes]:
        try:
            if first is not _END:
                yield sse_event(first)
                async for item in items:
                    yield sse_event(item)
        except HTTPException as exc:  # raised on purpose: its detail is meant for the client
            yield sse_event({"status": exc.status_code, "detail": exc.detail}, event="error")
        except Exception as exc:
            # Like a 500: logged in full with the request id; the client learns nothing internal.
            log.error("stream_failed", path=path, exc_info=exc)
            yield sse_event({"detail": "internal server error", "request_id": current_request_id()}, event="error")

    return StreamingResponse(events(), media_type="text/event-stream", headers=_SSE_HEADERS)


async def _as_async(source: Any, executor: ThreadPoolExecutor) -> AsyncIterator[Any]:
    if hasattr(source, "__aiter__"):
        async for item in source:
            yield item
        return
    if not hasattr(source, "__iter__") or isinstance(source, (str, bytes, dict, BaseModel)):
        yield source
        return
    iterator: Iterator[Any] = iter(source)
    while True:
        item = await _in_thread(executor, functools.partial(next, iterator, _END))
        if item is _END:
            return
        yield item


def sse_event(item: Any, event: str | None = None) -> bytes:
    """One Server-Sent Event: ``str`` as is, pydantic models and other values as JSON, ``bytes`` raw."""
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        data = item
    elif isinstance(item, BaseModel):
        data = item.model_dump_json()
    else:
        data = json.dumps(item, default=str, separators=(",", ":"))
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    prefix = f"event: {event}\n" if event else ""
    return f"{prefix}{lines}\n".encode()
