"""The live dashboard: one self-contained page (``observe/static``) served by the controller.

How the controller mounts it (beside H6a's query router, on the same app)::

    router = build_dashboard_router(
        app_name=spec.app,
        engine=engine,                      # lichen.observe.promql.Engine
        rules=rule_manager,                 # lichen.observe.rules.RuleManager (alerts + headroom)
        status=controller.status,           # () -> the dict of GET /v1/status
        events=lambda limit: [e.__dict__ for e in controller.store.events(None, limit)],
        token=token,                        # the control API token (None: no check)
    )
    create_api(controller, token, extra_routers=[query_router, router])

Routes (under ``prefix``, default ``/dashboard``):

* ``GET /dashboard/`` -- the page; ``/dashboard/static/*`` its script and style.
  These carry no data and need no token, so a browser can open them; the page
  reads the token from the URL fragment (``#token=...``, never sent to the
  server or its logs) and sends it as a bearer token on every data request.
* ``GET /dashboard/api/config`` -- app name, refresh period and the chart
  panels (:data:`PANELS`, the same queries the Grafana export uses).
* ``GET /dashboard/api/overview`` -- services, replicas with states and
  revisions, alerts with states, recent events, the headroom of every
  threshold rule and each service's risk score (``lichen.control.headroom``).
* ``GET /dashboard/api/slo`` -- each service's SLOs: attainment, error budget
  left and burn rates (``lichen.observe.slo_reports``, as ``lichen slo --json``).

The charts poll ``/api/v1/query_range`` (Prometheus' API, served by the
query router) every ``refresh_s`` seconds; ``?refresh=N`` in the page URL
overrides it. No CDN: the charts are hand-written SVG.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Header, HTTPException
from fastapi.responses import FileResponse, RedirectResponse

from lichen.clocks import Clock, SystemClock
from lichen.control.alerting import FIRING, PENDING
from lichen.control.headroom import (
    PENDING_RISK,
    RISK_WARNING,
    AlertProgress,
    Condition,
    alert_progress,
    condition_headroom,
    condition_of,
    risk_score,
    rule_risk,
    worst_value,
)

STATIC_DIR = Path(__file__).with_name("static")
STATIC_FILES = {"dashboard.js": "text/javascript", "dashboard.css": "text/css", "index.html": "text/html"}
RATE_WINDOW = "1m"


@dataclass(frozen=True)
class PanelQuery:
    expr: str
    legend: str  # Grafana legend format: {{label}} placeholders


@dataclass(frozen=True)
class Panel:
    id: str
    title: str
    unit: str  # Grafana unit id: reqps, percentunit, s, short
    queries: tuple[PanelQuery, ...]


def _rate(selector: str) -> str:
    return f"rate({selector}[{RATE_WINDOW}])"


_REQS = "lichen_requests_total"
_ALL = f"sum by (service) ({_rate(_REQS)})"
_ERRS = "sum by (service) (" + _rate(_REQS + '{status=~"5.."}') + ")"
_BUCKETS = f"sum by (service, le) ({_rate('lichen_request_duration_seconds_bucket')})"

PANELS: tuple[Panel, ...] = (
    Panel("requests", "Request rate", "reqps", (PanelQuery(_ALL, "{{service}}"),)),
    Panel(
        "errors",
        "Error ratio (5xx)",
        "percentunit",
        # `or ... * 0` keeps a 0 line for services that have had no 5xx at all
        (PanelQuery(f"({_ERRS} or {_ALL} * 0) / {_ALL}", "{{service}}"),),
    ),
    Panel(
        "latency",
        "Latency p50 / p95 / p99",
        "s",
        tuple(
            PanelQuery(f"histogram_quantile({q}, {_BUCKETS})", f"{{{{service}}}} p{int(q * 100)}")
            for q in (0.5, 0.95, 0.99)
        ),
    ),
    Panel("inflight", "In-flight requests", "short", (PanelQuery("sum by (service) (lichen_inflight_requests)", "{{service}}"),)),
    Panel("replicas", "Replicas by state", "short", (PanelQuery("sum by (service, state) (lichen_replicas)", "{{service}} {{state}}"),)),
    Panel("power", "Power by service (W, energy meter)", "watt", (
        PanelQuery(f"sum by (service) ({_rate('lichen_energy_joules_total')})", "{{service}}"),
        PanelQuery(f"sum by (service) ({_rate('lichen_energy_joules_low_total')})", "{{service}} low"),
        PanelQuery(f"sum by (service) ({_rate('lichen_energy_joules_high_total')})", "{{service}} high"),
    )),
    Panel("energy_per_request", "Energy per request by revision (J)", "joule", (
        PanelQuery(f"sum by (service, revision) ({_rate('lichen_energy_joules_total')}) / sum by (service, revision) "
                   f"({_rate('lichen_gateway_requests_total')})", "{{service}} {{revision}}"),
    )),
    Panel("carbon", "Carbon by service (g CO2e per hour)", "short", (
        PanelQuery(f"3600 * sum by (service) ({_rate('lichen_carbon_grams_total')})", "{{service}}"),
    )),
    Panel("sci", "SCI (g CO2e per 1000 requests, last 5 min)", "short", (
        PanelQuery("sum by (service, revision) (lichen_sci_grams_per_1000_requests)", "{{service}} {{revision}}"),
    )),
)


def panels_json() -> list[dict[str, Any]]:
    return [asdict(p) for p in PANELS]


# ----------------------------------------------------------------- headroom


class HeadroomEvaluator:
    """Evaluates every threshold alert rule's metric side and computes headroom and risk."""

    def __init__(self, engine: Any, rules: Any, *, cache_s: float = 2.0) -> None:
        self.engine, self.rules = engine, rules
        self.cache_s = cache_s
        self._conditions: dict[str, Condition | None] = {}
        self._cached: tuple[float, frozenset[tuple[str, str]], dict[str, Any]] | None = None

    def _condition(self, expr: str) -> Condition | None:
        if expr not in self._conditions:
            try:
                self._conditions[expr] = condition_of(expr)
            except ValueError:
                self._conditions[expr] = None
        return self._conditions[expr]

    def report(self, now_s: float, alerting: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Headroom rows (nearest to firing first) and risk per service; cached for ``cache_s``
        so several open dashboards do not re-evaluate every rule on every poll.

        ``alerting`` maps a service to the state of its most advanced alert (``firing``
        or ``pending``), also of rules without a threshold (``absent(...)``)."""
        key = frozenset((alerting or {}).items())
        if self._cached and self._cached[1] == key and 0 <= now_s - self._cached[0] < self.cache_s:
            return self._cached[2]
        report = self._evaluate(now_s, dict(alerting or {}))
        self._cached = (now_s, key, report)
        return report

    def _rule_rows(self, group: Any, rule: Any, condition: Condition, now_s: float) -> list[dict[str, Any]]:
        default_service = rule.labels.get("service", "")
        values: dict[str, dict[str, float]] = {}
        for t in condition.thresholds():
            by_service: dict[str, list[float]] = {}
            for labels, value in self.engine.instant_samples(t.metric_expr, now_s):
                by_service.setdefault(_service_of(labels, default_service), []).append(value)
            worst = {s: worst_value(t, vs) for s, vs in by_service.items()}
            values[t.metric_expr] = {s: v for s, v in worst.items() if v is not None}
        headrooms = condition_headroom(condition, values)
        progress = alert_progress(
            ((_service_of(a.label_dict, default_service), a.state, a.active_at_s) for a in rule.active.values()), now_s
        )
        services = set(headrooms) | set(progress) | {s for v in values.values() for s in v}
        services |= {default_service} if default_service or not services else set()
        rows = []
        for service in sorted(services):
            h = headrooms.get(service)
            state = progress.get(service, AlertProgress())
            rows.append(
                {
                    "alert": rule.name,
                    "group": group.name,
                    "labels": dict(rule.labels),  # tells a rule's variants apart (burn-rate windows)
                    "service": service,
                    "headroom": _finite(h),  # None: no data
                    "state": state.state,
                    "pending_s": state.pending_s,
                    "for_s": rule.for_s,
                    "risk": rule_risk(h, state, rule.for_s),
                    "thresholds": [
                        {
                            "expr": t.metric_expr,
                            "op": t.op,
                            "threshold": t.threshold,
                            "healthy": _finite(t.healthy),
                            "value": _finite(values.get(t.metric_expr, {}).get(service)),
                        }
                        for t in condition.thresholds()
                    ],
                }
            )
        return rows

    def _evaluate(self, now_s: float, alerting: dict[str, str]) -> dict[str, Any]:
        rows: list[dict[str, Any]] = []
        for group in getattr(self.rules, "groups", []):
            for rule in group.rules:
                condition = self._condition(rule.expr) if rule.kind == "alert" else None
                if condition is None:
                    continue
                try:
                    rows.extend(self._rule_rows(group, rule, condition, now_s))
                except Exception:  # noqa: BLE001 - a failing rule shows no headroom, never breaks the page
                    continue
        by_service: dict[str, list[float | None]] = {}
        for row in rows:
            by_service.setdefault(row["service"], []).append(row["risk"])
        for service, state in alerting.items():  # alerts of rules without a threshold count too
            by_service.setdefault(service, []).append(1.0 if state == FIRING else PENDING_RISK)
        risk = {s: risk_score(rs) for s, rs in sorted(by_service.items())}
        rows.sort(key=lambda r: (-(r["risk"] if r["risk"] is not None else -1.0), r["alert"], r["service"]))
        return {"rows": rows, "risk": risk}


def _service_of(labels: Mapping[str, str], default: str) -> str:
    """The service a series or alert belongs to: its ``service`` label, the rule's, else its ``job``
    (the gateway's and the controller's own targets)."""
    return labels.get("service") or default or labels.get("job", "")


def _finite(value: float | None) -> float | None:
    if value is None or math.isnan(value):
        return None
    if math.isinf(value):
        return -1e9 if value < 0 else 1e9
    return value


# ------------------------------------------------------------------ overview


def _alerts(rules: Any) -> list[dict[str, Any]]:
    if rules is None:
        return []
    out = []
    for a in rules.alerts(include_resolved=False):
        out.append(
            {
                "alertname": a.labels.get("alertname", a.rule),
                "state": a.state,
                "labels": a.labels,
                "annotations": a.annotations,
                "activeAt": a.active_at_s,
                "value": _finite(a.value),
            }
        )
    order = {"firing": 0, "pending": 1}
    out.sort(key=lambda a: (order.get(a["state"], 2), a["alertname"], a["labels"].get("service", "")))
    return out


def _services_from_metrics(engine: Any, now_s: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Without a controller: services and replicas from the scraper's ``up`` series."""
    services: dict[str, Any] = {}
    replicas: list[dict[str, Any]] = []
    try:
        samples = engine.instant_samples("up", now_s)
    except Exception:  # noqa: BLE001
        return services, replicas
    for labels, value in sorted(samples, key=lambda s: sorted(s[0].items())):
        service = labels.get("service")
        if not service:
            continue
        entry = services.setdefault(service, {"revision": labels.get("revision"), "desired": 0, "ready": 0})
        entry["desired"] += 1
        entry["ready"] += 1 if value == 1 else 0
        replicas.append(
            {
                "id": labels.get("replica", labels.get("instance", "")),
                "service": service,
                "revision": labels.get("revision"),
                "state": "Up" if value == 1 else "Down",
                "restarts": None,
            }
        )
    return services, replicas


def rollout_text(service: Mapping[str, Any]) -> str:
    """The dashboard's rollout cell for one service of ``lichen status --json``: a canary's weight and state,
    a rolling update in progress or stalled, or nothing."""
    canary = service.get("canary")
    if canary:
        return (f"canary {canary.get('weight')}% beside {canary.get('stable')}"
                + (" (paused)" if canary.get("paused") else ""))
    rollout = service.get("rollout") or {}
    if rollout.get("status") in ("progressing", "stalled"):
        return f"rolling update {rollout['status']}" + (f": {rollout['reason']}" if rollout.get("reason") else "")
    return ""


def build_overview(
    *,
    app_name: str,
    engine: Any = None,
    rules: Any = None,
    status: Callable[[], Mapping[str, Any]] | None = None,
    events: Callable[[int], Sequence[Mapping[str, Any]]] | None = None,
    headroom: HeadroomEvaluator | None = None,
    now_s: float,
    events_limit: int = 50,
) -> dict[str, Any]:
    if status is not None:
        st = dict(status())
        services = dict(st.get("services", {}))
        replicas = [
            {k: r.get(k) for k in ("id", "service", "revision", "state", "restarts", "pid", "port", "uptime_s")}
            for r in st.get("replicas", [])
        ]
    elif engine is not None:
        services, replicas = _services_from_metrics(engine, now_s)
    else:
        services, replicas = {}, []
    alerts = _alerts(rules)
    alerting: dict[str, str] = {}
    for a in alerts:
        service = _service_of(a["labels"], "")
        if a["state"] == FIRING or (a["state"] == PENDING and alerting.get(service) != FIRING):
            alerting[service] = a["state"]
    report = headroom.report(now_s, alerting) if headroom else {"rows": [], "risk": {}}
    risk = dict(report["risk"])
    for name in services:
        risk.setdefault(name, None)  # no rule has data for it: say so, not 0
    return {
        "app": app_name,
        "time": now_s,
        "services": [{"name": n, **dict(s), "risk": risk[n], "rollout_text": rollout_text(s)}
                     for n, s in sorted(services.items())],
        "replicas": replicas,
        "alerts": alerts,
        "events": list(events(events_limit)) if events else [],
        "headroom": report["rows"],
        "risk": risk,
        "risk_warning": RISK_WARNING,
    }


# -------------------------------------------------------------------- router


def _public() -> None:
    """Marks the router as carrying its own auth, so the control API adds none."""


def build_dashboard_router(
    *,
    app_name: str = "lichen",
    engine: Any = None,
    rules: Any = None,
    status: Callable[[], Mapping[str, Any]] | None = None,
    events: Callable[[int], Sequence[Mapping[str, Any]]] | None = None,
    token: str | None = None,
    prefix: str = "/dashboard",
    query_base: str = "",
    refresh_s: float = 5.0,
    clock: Clock | None = None,
    slos: Callable[[], tuple[Mapping[str, Any], float]] | None = None,
    requires: Callable[[str], Any] | None = None,
) -> APIRouter:
    """The dashboard's FastAPI router (see the module docstring). ``requires(role)``: the dependency that
    checks a role (the control API's, so viewer tokens work); without it, ``token`` is compared."""
    import hmac

    clock = clock or SystemClock()
    router = APIRouter(dependencies=[Depends(_public)])
    page = [Depends(requires("public"))] if requires is not None else []
    evaluator = HeadroomEvaluator(engine, rules) if engine is not None and rules is not None else None

    def check(authorization: str | None = Header(default=None)) -> None:
        if token is None:
            return
        scheme, _, value = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip(), token):
            raise HTTPException(status_code=401, detail="missing or wrong bearer token (open the URL 'lichen dashboard' prints)")

    data = [Depends(requires("viewer"))] if requires is not None else [Depends(check)]

    @router.get(prefix, include_in_schema=False, dependencies=page)
    async def root() -> RedirectResponse:
        return RedirectResponse(prefix + "/")

    @router.get(prefix + "/", include_in_schema=False, dependencies=page)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers={"Cache-Control": "no-store"})

    @router.get(prefix + "/static/{name}", include_in_schema=False, dependencies=page)
    async def static(name: str) -> FileResponse:
        if name not in STATIC_FILES:
            raise HTTPException(status_code=404, detail=f"no dashboard file {name!r}")
        return FileResponse(STATIC_DIR / name, media_type=STATIC_FILES[name], headers={"Cache-Control": "no-cache"})

    @router.get(prefix + "/api/config", dependencies=data)
    async def config() -> dict[str, Any]:
        return {"app": app_name, "refresh_s": refresh_s, "query_base": query_base, "panels": panels_json()}

    @router.get(prefix + "/api/overview", dependencies=data)
    async def overview() -> dict[str, Any]:
        return build_overview(
            app_name=app_name,
            engine=engine,
            rules=rules,
            status=status,
            events=events,
            headroom=evaluator,
            now_s=clock.wall(),
        )

    @router.get(prefix + "/api/slo", dependencies=data)
    async def slo() -> dict[str, Any]:
        """The SLO panel: what ``lichen slo --json`` prints (:mod:`lichen.observe.slo_reports`)."""
        if engine is None or slos is None:
            return {"window": None, "slos": []}
        from lichen.observe.slo_reports import MAX_WINDOW_S, slo_report

        services, retention_s = slos()
        return await asyncio.to_thread(slo_report, engine.instant_samples, services,
                                       min(retention_s, MAX_WINDOW_S), clock.wall())

    return router
