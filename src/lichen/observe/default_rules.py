"""The default alert rule pack every app gets (``observability.default_rules: true``).

For the controller: ``MetricsPipeline.from_spec(spec.observability, base_dir=app_dir,
extra_groups=default_rule_groups(spec))``.

:func:`default_rules` builds a Prometheus rule file (a dict; :func:`default_rules_yaml`
renders it) from an ``AppSpec``: one group per service, named
``lichen-defaults-<service>``, plus one app-wide group for scrape health. The
same file runs unchanged on Lichen's evaluator, on a real Prometheus
(``promtool check rules`` passes) and as a Kubernetes PrometheusRule.

Per service:

========================== ============================================================ ========
alert                      expression (``{s}`` = ``service="<name>"``)                    severity
========================== ============================================================ ========
LichenReplicaDown          ``up{s} == 0`` for 1m                                          critical
LichenCrashLooping         a replica in restart backoff within 10 min                     critical
                           (``max_over_time(lichen_replica_crashlooping{s}[10m]) > 0``),
                           else more than 3 restarts of the service in 10 min
LichenHighErrorRatio       5xx share of ``lichen_requests_total`` over 5m > 5 % for 5m    warning
LichenErrorBudgetBurn      availability SLO burn rate, multi-window (below)               page/ticket
LichenLatencyBudgetBurn    latency SLO burn rate, multi-window (below)                    page/ticket
LichenInflightNearLimit    ``lichen_inflight_requests / lichen_max_concurrency > 0.9``    warning
                           for 2m
========================== ============================================================ ========

App-wide: ``LichenScrapeFailing`` -- a target that is still scraped failed more than
10 % of its scrapes over 10 min while it is not simply down (every scrape of the
last minute failing is ReplicaDown's job). A replica is scraped only once it has
passed readiness, and a replica that exits stops being a target, so a crash loop
raises ``LichenCrashLooping`` alone, once per replica.

Burn-rate alerts follow the Google SRE workbook (ch. 5, "multiwindow,
multi-burn-rate alerts"): with error budget ``b = 1 - objective``, page when
the bad-event ratio exceeds ``14.4 b`` over both 1h and 5m, or ``6 b`` over
both 6h and 30m; open a ticket when it exceeds ``1 b`` over both 3d and 6h.
The latency SLI counts a request as good when it finished within
``slo.latency_ms``, read from the histogram bucket ``le="<latency_ms/1000>"``:
every replica's latency histogram has a bucket exactly there (the controller
passes the threshold as ``LICHEN_SLO_LATENCY_MS``;
:func:`lichen.sdk.instruments.latency_buckets_s`), so the objective is exact,
whatever the threshold.
"""

from __future__ import annotations

from typing import Any

import yaml

from lichen.sdk.instruments import slo_bucket_s
from lichen.spec.models import AppSpec, ServiceSpec
from lichen.spec.quantities import format_duration

HIGH_ERROR_RATIO = 0.05
INFLIGHT_NEAR_LIMIT = 0.9
CRASH_RESTARTS_10M = 3
# (long window, short window, burn-rate factor, severity, for)
BURN_WINDOWS = (
    ("1h", "5m", 14.4, "page", "2m"),
    ("6h", "30m", 6.0, "page", "15m"),
    ("3d", "6h", 1.0, "ticket", "1h"),
)


def go_float(value: float) -> str:
    """A float as Prometheus' Go client writes ``le`` labels (``0.25``, ``1.0``, ``+Inf``)."""
    from prometheus_client.utils import floatToGoString

    return floatToGoString(value)


def latency_bucket_s(latency_ms: float) -> float:
    """The histogram bucket of the latency objective: exactly ``latency_ms`` (replicas add a bucket there)."""
    return slo_bucket_s(latency_ms)


def _num(value: float) -> str:
    return f"{value:.6g}"


def error_ratio(sel: str, window: str) -> str:
    """The availability SLI's bad-event ratio over ``window`` (5xx share); ``lichen slo`` reads it too."""
    return (
        f'sum by (service) (rate(lichen_requests_total{{{sel},status=~"5.."}}[{window}]))'
        f" / sum by (service) (rate(lichen_requests_total{{{sel}}}[{window}]))"
    )


def slow_ratio(sel: str, le: str, window: str) -> str:
    """The latency SLI's bad-event ratio over ``window`` (share slower than ``le`` s); ``lichen slo`` reads it too."""
    return (
        f'1 - (sum by (service) (rate(lichen_request_duration_seconds_bucket{{{sel},le="{le}"}}[{window}]))'
        f" / sum by (service) (rate(lichen_request_duration_seconds_count{{{sel}}}[{window}])))"
    )


def _burn_rules(alert: str, ratio: Any, budget: float, what: str, labels: dict[str, str]) -> list[dict[str, Any]]:
    rules = []
    for long_w, short_w, factor, severity, hold in BURN_WINDOWS:
        threshold = _num(factor * budget)
        rules.append(
            {
                "alert": alert,
                "expr": f"({ratio(long_w)}) > {threshold}\nand\n({ratio(short_w)}) > {threshold}",
                "for": hold,
                "labels": {**labels, "severity": severity, "window": f"{long_w}/{short_w}"},
                "annotations": {
                    "summary": f"{{{{ $labels.service }}}} burns its {what} error budget {factor:g}x too fast",
                    "description": (
                        f"Over {long_w} and {short_w} the {what} bad-event ratio is above {threshold}"
                        f" ({factor:g} x the budget {_num(budget)}); now {{{{ $value }}}}."
                    ),
                },
            }
        )
    return rules


def service_rules(app: str, name: str, service: ServiceSpec) -> list[dict[str, Any]]:
    sel = f'service="{name}"'
    labels = {"app": app, "service": name}  # also keeps rules of different services distinct for promtool
    le = go_float(latency_bucket_s(service.slo.latency_ms))
    rules: list[dict[str, Any]] = [
        {
            "alert": "LichenReplicaDown",
            "expr": f"up{{{sel}}} == 0",
            "for": "1m",
            "labels": {**labels, "severity": "critical"},
            "annotations": {
                "summary": "replica {{ $labels.replica }} of {{ $labels.service }} is down",
                "description": "{{ $labels.instance }} has not answered a scrape for 1 minute.",
            },
        },
        {
            "alert": "LichenCrashLooping",
            "expr": (
                # in backoff at some point in the last 10 min: the gauge is 0 while the replica runs
                # between crashes, and an alert that resolved at every restart would flap
                f"max by (service, replica) (max_over_time(lichen_replica_crashlooping{{{sel}}}[10m])) > 0\n"
                # `on (service)`: the restart count speaks only for a service with no replica in
                # backoff, so one crash-looping replica raises one alert, never a second label set
                f"or on (service)\n"
                f"sum by (service) (increase(lichen_replica_restarts_total{{{sel}}}[10m])) > {CRASH_RESTARTS_10M}"
            ),
            "labels": {**labels, "severity": "critical"},
            "annotations": {
                "summary": "{{ $labels.service }} is crash looping",
                "description": "{{ if $labels.replica }}Replica {{ $labels.replica }} was in restart backoff within the last 10 minutes{{ else }}The service restarted more than 3 times in 10 minutes ({{ $value }}){{ end }}.",
            },
        },
        {
            "alert": "LichenHighErrorRatio",
            "expr": f"({error_ratio(sel, '5m')}) > {HIGH_ERROR_RATIO}",
            "for": "5m",
            "labels": {**labels, "severity": "warning"},
            "annotations": {
                "summary": "{{ $labels.service }} answers with 5xx too often",
                "description": "{{ $value }} of requests over 5 minutes failed with a 5xx status (threshold 0.05).",
            },
        },
        *_burn_rules(
            "LichenErrorBudgetBurn",
            lambda w: error_ratio(sel, w),
            1.0 - service.slo.availability,
            "availability",
            labels,
        ),
        *_burn_rules(
            "LichenLatencyBudgetBurn",
            lambda w: slow_ratio(sel, le, w),
            1.0 - service.slo.latency_target,
            f"latency (<= {le} s)",
            labels,
        ),
        {
            "alert": "LichenInflightNearLimit",
            "expr": f"lichen_inflight_requests{{{sel}}} / lichen_max_concurrency{{{sel}}} > {INFLIGHT_NEAR_LIMIT}",
            "for": "2m",
            "labels": {**labels, "severity": "warning"},
            "annotations": {
                "summary": "{{ $labels.replica }} of {{ $labels.service }} is near its concurrency limit",
                "description": "In-flight requests are {{ $value }} of the limit on {{ $labels.endpoint }}.",
            },
        },
    ]
    return rules


def default_rules(app: AppSpec, *, interval: str | None = None) -> dict[str, Any]:
    """The default rule pack for ``app`` as a Prometheus rule-file document."""
    every = interval or format_duration(app.observability.evaluation_interval_s)
    groups: list[dict[str, Any]] = [
        {"name": f"lichen-defaults-{name}", "interval": every, "rules": service_rules(app.app, name, service)}
        for name, service in sorted(app.services.items())
    ]
    groups.append(
        {
            "name": "lichen-defaults-scraping",
            "interval": every,
            "rules": [
                {
                    "alert": "LichenScrapeFailing",
                    # not simply down (every scrape of the last minute failed: ReplicaDown's job), and
                    # still a target (`and up`: a replica that exited, or restarted on a new port, is not)
                    "expr": "avg_over_time(up[10m]) < 0.9\nunless\nmax_over_time(up[1m]) == 0\nand\nup",
                    "for": "5m",
                    "labels": {"app": app.app, "severity": "warning"},
                    "annotations": {
                        "summary": "scrapes of {{ $labels.instance }} fail intermittently",
                        "description": "Only {{ $value }} of the scrapes in the last 10 minutes succeeded.",
                    },
                }
            ],
        }
    )
    return {"groups": groups}


class _Literal(str):
    pass


def _literal(dumper: yaml.Dumper, value: _Literal) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")


def default_rules_yaml(app: AppSpec, *, interval: str | None = None) -> str:
    """:func:`default_rules` as YAML; multi-line expressions are block scalars."""
    doc = default_rules(app, interval=interval)
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "\n" in rule["expr"]:
                rule["expr"] = _Literal(rule["expr"])

    class Dumper(yaml.SafeDumper):
        pass

    Dumper.add_representer(_Literal, _literal)
    header = f"# Lichen default alert rules for app {app.app!r}; generated, do not edit.\n"
    return header + yaml.dump(doc, Dumper=Dumper, sort_keys=False, width=120)


def default_rule_groups(app: AppSpec) -> list[Any]:
    """The pack as parsed rule groups for ``MetricsPipeline.from_spec(..., extra_groups=...)``;
    empty when ``observability.default_rules`` is false."""
    if not app.observability.default_rules:
        return []
    from lichen.observe.rule_files import parse_rule_text

    return parse_rule_text(default_rules_yaml(app), source=f"<default rules of {app.app}>")
