"""Prometheus' HTTP query API over the embedded store, as a FastAPI router.

Interface: ``build_query_router(store, engine, rules=None, clock=SystemClock(), metadata=None) -> APIRouter``
(``clock``: a :class:`lichen.clocks.Clock`; a query without ``time`` is evaluated at its ``wall()``)
(``metadata``: a function returning the scraped metric families' type and help, for ``/api/v1/metadata``).

Routes (GET and POST with a form body, JSON shapes as Prometheus serves them, so Grafana's
Prometheus data source works against it):

* ``/api/v1/query`` (``query``, ``time``), ``/api/v1/query_range`` (``query``, ``start``,
  ``end``, ``step``)
* ``/api/v1/series`` (``match[]``, ``start``, ``end``), ``/api/v1/labels``,
  ``/api/v1/label/{name}/values``
* ``/api/v1/rules``, ``/api/v1/alerts`` (when a :class:`RuleManager` is given)
* ``/api/v1/status/buildinfo``, ``/api/v1/status/config``, ``/api/v1/status/runtimeinfo``,
  ``/api/v1/metadata``, ``/api/v1/query_exemplars`` — what Grafana probes
* ``/federate`` (``match[]``) — the latest sample of every matching series in text format, so a
  real Prometheus can scrape Lichen (``honor_labels: true``).

Errors come back as ``{"status": "error", "errorType": "bad_data"|"execution", "error": ...}``
with HTTP 400 or 422.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl

import promql_parser as pp
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from lichen.clocks import Clock, SystemClock
from lichen.logs import get_logger
from lichen.observe.promql import Engine, QueryError, _matchers, parse_promql
from lichen.observe.promql_values import format_value
from lichen.observe.series import LabelMatcher, SeriesStore, stale_mask

PROMETHEUS_COMPAT_VERSION = "2.42.0"
log = get_logger("lichen.observe.http_api")


class _BadData(Exception):
    pass


def _error(kind: str, message: str, status: int) -> JSONResponse:
    return JSONResponse({"status": "error", "errorType": kind, "error": message}, status_code=status)


def _ok(data: Any) -> JSONResponse:
    return JSONResponse({"status": "success", "data": data})


async def _params(request: Request) -> list[tuple[str, str]]:
    items = list(request.query_params.multi_items())
    if request.method == "POST":
        body = (await request.body()).decode("utf-8", "replace")
        items.extend(parse_qsl(body, keep_blank_values=True))
    return items


def _get(items: list[tuple[str, str]], name: str) -> str | None:
    for k, v in items:
        if k == name:
            return v
    return None


MAX_SECONDS = 1e13
"""The largest time or step taken, in seconds (about 317,000 years): its milliseconds, with any offset or range
a query adds, stay far inside the int64 the engine computes in; Prometheus' own bound is int64 milliseconds."""


def parse_time(text: str | None, default: float) -> float:
    if text is None or text == "":
        return default
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is not None:
        if not math.isfinite(value) or abs(value) > MAX_SECONDS:  # inf, NaN and 1e300 are no time
            raise _BadData(f"cannot parse {text!r} to a valid timestamp")
        return value
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if moment.tzinfo is None:  # RFC 3339 always has a zone; read a bare one as UTC, never as local time
            moment = moment.replace(tzinfo=timezone.utc)
        return moment.timestamp()
    except (ValueError, OverflowError):
        raise _BadData(f"cannot parse {text!r} to a valid timestamp") from None


def parse_step(text: str | None) -> float:
    if text is None or text == "":
        raise _BadData("missing parameter 'step'")
    try:
        value = float(text)
    except ValueError:
        try:
            value = pp.parse_duration(text).total_seconds()
        except (ValueError, OverflowError):
            raise _BadData(f"cannot parse {text!r} to a valid duration") from None
    if not math.isfinite(value) or abs(value) > MAX_SECONDS:
        raise _BadData(f"cannot parse {text!r} to a valid duration")
    return value


def selector_matchers(text: str) -> list[LabelMatcher]:
    try:
        node = parse_promql(text)  # never pp.parse: a deep selector text would crash the process
    except QueryError as exc:
        raise _BadData(f"invalid match[] {text!r}: {exc.message}") from None
    if not isinstance(node, pp.VectorSelector):
        raise _BadData(f"invalid match[] {text!r}: not a series selector")
    return _matchers(node)


def build_query_router(
    store: SeriesStore,
    engine: Engine | None = None,
    rules: Any = None,
    clock: Clock | None = None,
    metadata: Callable[[], dict[str, list[dict[str, str]]]] | None = None,
) -> APIRouter:
    engine = engine or Engine(store)
    clock = clock or SystemClock()
    router = APIRouter()

    def handle(fn: Callable[[list[tuple[str, str]]], Any]) -> Callable:
        async def endpoint(request: Request) -> JSONResponse:
            items = await _params(request)
            try:
                # queries can take tens of milliseconds: keep the controller's event loop free meanwhile
                return _ok(await asyncio.to_thread(fn, items))
            except _BadData as exc:
                return _error("bad_data", str(exc), 400)
            except QueryError as exc:
                return _error("execution", exc.message, 422)
            except Exception as exc:  # noqa: BLE001 - a bug must still answer in Prometheus' shape
                log.exception("query_failed", path=request.url.path)
                return _error("internal", f"{type(exc).__name__}: {exc}", 500)

        return endpoint

    def _expr(items: list[tuple[str, str]]) -> str:
        expr = _get(items, "query")
        if not expr:
            raise _BadData("missing parameter 'query'")
        try:
            engine.parse(expr)
        except QueryError as exc:
            raise _BadData(exc.message) from None
        return expr

    def query(items: list[tuple[str, str]]) -> Any:
        expr = _expr(items)
        return engine.instant(expr, parse_time(_get(items, "time"), clock.wall()))

    def query_range(items: list[tuple[str, str]]) -> Any:
        expr = _expr(items)
        start = parse_time(_get(items, "start"), math.nan)
        end = parse_time(_get(items, "end"), math.nan)
        if math.isnan(start) or math.isnan(end):
            raise _BadData("missing parameter 'start' or 'end'")
        step = parse_step(_get(items, "step"))
        # Prometheus answers these with bad_data (400), before evaluating anything
        if end < start:
            raise _BadData('invalid parameter "end": end timestamp must not be before start time')
        if step <= 0:
            raise _BadData('invalid parameter "step": zero or negative query resolution step widths are not accepted. Try a positive integer')
        if step < 0.0005:  # the engine's steps are whole milliseconds
            raise _BadData('invalid parameter "step": the query resolution step is under a millisecond; use at least 0.001')
        if (end - start) / step > 11_000:
            raise _BadData("exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)")
        try:
            return engine.range(expr, start, end, step)
        except QueryError as exc:
            if exc.message.startswith("invalid expression type"):
                raise _BadData(exc.message) from None
            raise

    def _range_ms(items: list[tuple[str, str]]) -> tuple[int | None, int | None]:
        start = _get(items, "start")
        end = _get(items, "end")
        return (
            int(parse_time(start, 0) * 1000) if start else None,
            int(parse_time(end, 0) * 1000) if end else None,
        )

    def _matched(items: list[tuple[str, str]], required: bool) -> list[dict[str, str]] | None:
        selectors = [v for k, v in items if k == "match[]"]
        if not selectors:
            if required:
                raise _BadData("no match[] parameter provided")
            return None
        start, end = _range_ms(items)
        seen: dict[tuple, dict[str, str]] = {}
        for sel in selectors:
            for labels in store.series_labels(selector_matchers(sel), start, end):
                seen[labels] = dict(labels)
        return [seen[k] for k in sorted(seen)]

    def series(items: list[tuple[str, str]]) -> Any:
        return _matched(items, required=True)

    def labels(items: list[tuple[str, str]]) -> Any:
        matched = _matched(items, required=False)
        if matched is None:
            return store.label_names()
        return sorted({k for s in matched for k in s})

    def label_values(name: str, items: list[tuple[str, str]]) -> Any:
        matched = _matched(items, required=False)
        if matched is None:
            return store.label_values(name)
        return sorted({s[name] for s in matched if name in s})

    for path, fn in (("/api/v1/query", query), ("/api/v1/query_range", query_range), ("/api/v1/series", series), ("/api/v1/labels", labels)):
        router.add_api_route(path, handle(fn), methods=["GET", "POST"], include_in_schema=False)

    @router.get("/api/v1/label/{name}/values", include_in_schema=False)
    async def label_values_route(name: str, request: Request) -> JSONResponse:
        items = await _params(request)
        if not (name.replace("_", "a").isalnum() and name.isascii() and not name[:1].isdigit()):
            return _error("bad_data", f'invalid label name: "{name}"', 400)
        try:
            return _ok(label_values(name, items))
        except _BadData as exc:
            return _error("bad_data", str(exc), 400)

    @router.get("/api/v1/status/buildinfo", include_in_schema=False)
    async def buildinfo() -> JSONResponse:
        from lichen import __version__

        return _ok(
            {
                "version": PROMETHEUS_COMPAT_VERSION,
                "revision": f"lichen-{__version__}",
                "branch": "lichen",
                "buildUser": "lichen",
                "buildDate": "",
                "goVersion": "",
            }
        )

    @router.get("/api/v1/status/config", include_in_schema=False)
    async def config() -> JSONResponse:
        return _ok({"yaml": "global:\n  scrape_interval: 5s\n"})

    @router.get("/api/v1/status/runtimeinfo", include_in_schema=False)
    async def runtimeinfo() -> JSONResponse:
        stats = store.stats()
        return _ok({"storageRetention": f"{store.retention_ms // 1000}s", "timeSeriesCount": stats["series"]})

    @router.get("/api/v1/metadata", include_in_schema=False)
    async def metadata_route(request: Request) -> JSONResponse:
        data = metadata() if metadata is not None else {}
        metric = request.query_params.get("metric")
        if metric:
            data = {metric: data[metric]} if metric in data else {}
        limit = request.query_params.get("limit")
        if limit and limit.lstrip("-").isdigit() and int(limit) >= 0:
            data = dict(list(sorted(data.items()))[: int(limit)])
        return _ok(dict(sorted(data.items())))

    @router.api_route("/api/v1/query_exemplars", methods=["GET", "POST"], include_in_schema=False)
    async def exemplars() -> JSONResponse:
        return _ok([])

    @router.get("/api/v1/rules", include_in_schema=False)
    async def rules_route() -> JSONResponse:
        return _ok(rules.rules_status() if rules is not None else {"groups": []})

    @router.get("/api/v1/alerts", include_in_schema=False)
    async def alerts_route() -> JSONResponse:
        alerts = [a.to_json() for a in rules.alerts(include_resolved=False)] if rules is not None else []
        return _ok({"alerts": alerts})

    @router.get("/federate", include_in_schema=False)
    async def federate(request: Request) -> PlainTextResponse:
        items = await _params(request)
        selectors = [v for k, v in items if k == "match[]"]
        if not selectors:
            return PlainTextResponse("no match[] parameter provided\n", status_code=400)
        now_ms = int(clock.wall() * 1000)
        lines: dict[str, list[str]] = {}
        try:
            matcher_sets = [selector_matchers(s) for s in selectors]
        except _BadData as exc:
            return PlainTextResponse(f"{exc}\n", status_code=400)
        seen: set[tuple] = set()
        for matchers in matcher_sets:
            for sd in store.select(matchers, now_ms - engine.lookback_ms, now_ms):
                if sd.labels in seen or not len(sd.values):
                    continue
                seen.add(sd.labels)
                value = sd.values[-1:]
                if bool(stale_mask(value)[0]):
                    continue
                labels = dict(sd.labels)
                name = labels.pop("__name__", "")
                body = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
                lines.setdefault(name, []).append(f"{name}{{{body}}} {format_value(float(value[0]))} {int(sd.t_ms[-1])}")
        text = "".join(f"# TYPE {name} untyped\n" + "\n".join(rows) + "\n" for name, rows in sorted(lines.items()))
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    return router


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


__all__ = ["build_query_router", "parse_time", "parse_step"]
