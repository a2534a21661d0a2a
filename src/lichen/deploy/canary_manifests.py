"""``rollout.strategy: canary`` in the cluster: an Argo Rollouts ``Rollout`` with an ``AnalysisTemplate``, or a
Flagger ``Canary`` with ``MetricTemplate`` s (``canary.provider`` chooses).

Both keep the spec's steps and bounds, written as PromQL on the replicas'
own metrics (the ServiceMonitor labels them ``service`` and ``revision``
as ``lichen up`` does): the error ratio against ``max_error_ratio``, the
p95 against ``max_p95_ms``, a request count against ``min_requests``
(below it a measurement is inconclusive, and Argo pauses as
``on_inconclusive: pause`` does), and every ``analysis.queries`` entry with
``$service``, ``$revision`` and ``$interval`` filled in. Lichen's relative
tests against the stable revision (Fisher's exact test, Mann-Whitney U)
have no equivalent in either controller; docs/kubernetes.md says so.
"""

from __future__ import annotations

from typing import Any

from lichen.deploy.chart_values import Condition, Manifest, value
from lichen.deploy.workloads import (
    ROLLOUT_REVISION_LABEL,
    RenderContext,
    pod_template,
    replicas_field,
    whole_seconds,
)
from lichen.spec.models import AnalysisSpec, ServiceSpec

CANARY = "{{args.canary-hash}}"
STABLE = "{{args.stable-hash}}"
PROMETHEUS_URL = "http://prometheus-operated.monitoring.svc:9090"


def _interval(analysis: AnalysisSpec) -> str:
    return f"{whole_seconds(analysis.interval_s)}s"


def revision_queries(name: str, analysis: AnalysisSpec, canary: str, stable: str | None,
                     label: str = "revision") -> list[dict[str, Any]]:
    """(metric name, PromQL, success bound, failure bound) for one canary: ``canary``/``stable`` select the
    revisions as the value of a ``label=~`` matcher (Argo's template arguments on ``revision``, or Flagger's
    canary pods as a regex on ``replica``)."""
    window = _interval(analysis)
    sel = f'service="{name}",{label}=~"{canary}"'
    requests = f"sum(increase(lichen_requests_total{{{sel}}}[{window}]))"
    errors = f'sum(increase(lichen_requests_total{{{sel},status=~"5.."}}[{window}]))'
    out = [
        {"name": "requests", "query": f"{requests} or vector(0)", "min": analysis.min_requests},
        # `or vector(0)`: before the canary's first request the sums are empty, not 0, and an empty result
        # is an error to Argo (five of them fail the analysis)
        {"name": "error-ratio", "query": f"({errors} or vector(0)) / clamp_min({requests} or vector(0), 1)",
         "max": analysis.max_error_ratio},
    ]
    if analysis.max_p95_ms is not None:
        out.append({"name": "p95-ms", "max": analysis.max_p95_ms,
                    "query": "histogram_quantile(0.95, sum by (le) (rate(lichen_request_duration_seconds_bucket"
                             f"{{{sel}}}[{window}]))) * 1000"})
    for query in analysis.queries:
        def filled(revision: str, text: str = query.query) -> str:
            return text.replace("$service", name).replace("$revision", revision).replace("$interval", window)
        if query.max_value is not None:
            out.append({"name": f"{query.name}-value", "query": filled(canary), "max": query.max_value})
        if query.max_ratio is not None and stable is not None:
            out.append({"name": f"{query.name}-ratio", "max": query.max_ratio,
                        "query": f"({filled(canary)}) / ({filled(stable)})"})
    return out


def argo_manifests(ctx: RenderContext, name: str, service: ServiceSpec, service_urls: dict[str, str],
                   file: str) -> list[Manifest]:
    analysis = service.rollout.analysis
    when = (Condition("canary.provider", "argo"),)
    metrics = []
    for check in revision_queries(name, analysis, CANARY, STABLE):
        metric: dict[str, Any] = {
            "name": check["name"], "interval": _interval(analysis),
            "provider": {"prometheus": {"address": value("canary.prometheusUrl", PROMETHEUS_URL),
                                        "query": check["query"]}},
        }
        if "min" in check:  # too few requests is inconclusive: neither condition holds
            metric["successCondition"] = f"result[0] >= {check['min']}"
            if analysis.on_inconclusive == "pause":
                metric["failureCondition"] = "false"
                metric["inconclusiveLimit"] = analysis.max_inconclusive
            else:  # fail: too few requests counts as a failure, max_inconclusive of them in a row abort
                metric["failureCondition"] = f"result[0] < {check['min']}"
                metric["failureLimit"] = analysis.max_inconclusive - 1
        else:
            # no value (a p95 of no requests is NaN) is not a failure: lichen up calls it inconclusive
            metric["successCondition"] = f"isNaN(result[0]) || result[0] <= {check['max']:g}"
            metric["failureLimit"] = analysis.failure_limit - 1
        metrics.append(metric)
    template = {"apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisTemplate", "metadata": ctx.metadata(name),
                "spec": {"args": [{"name": "canary-hash"}, {"name": "stable-hash"}], "metrics": metrics}}
    steps: list[dict[str, Any]] = []
    for weight in service.rollout.steps[:-1]:
        steps += [{"setWeight": weight}, {"pause": {"duration": _interval(analysis)}}]
    rollout = {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": ctx.metadata(name),
        "spec": {
            **replicas_field(name, service),
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": whole_seconds(service.rollout.progress_deadline_s),
            "progressDeadlineAbort": service.rollout.auto_rollback,
            "selector": {"matchLabels": ctx.selector(name)},
            "template": pod_template(ctx, name, service, ROLLOUT_REVISION_LABEL, service_urls),
            "strategy": {"canary": {
                "maxSurge": service.rollout.max_surge, "maxUnavailable": service.rollout.max_unavailable,
                "analysis": {"templates": [{"templateName": ctx.name(name)}], "startingStep": 1,
                             "args": [{"name": "canary-hash", "valueFrom": {"podTemplateHashValue": "Latest"}},
                                      {"name": "stable-hash", "valueFrom": {"podTemplateHashValue": "Stable"}}]},
                "steps": steps,
            }},
        },
    }
    return [Manifest(file, rollout, when), Manifest(file, template, when)]


def flagger_manifests(ctx: RenderContext, name: str, service: ServiceSpec, file: str) -> list[Manifest]:
    """A Flagger ``Canary`` on the service's Deployment: Flagger's canary pods keep the Deployment's name, its
    primary ones get ``-primary``, so the canary's series are the replicas without it."""
    analysis = service.rollout.analysis
    when = (Condition("canary.provider", "flagger"),)
    canary = f"{ctx.name(name)}-[a-z0-9]+-[a-z0-9]+"
    out = []
    refs = []
    by_revision = {f"{q.name}-value" for q in analysis.queries if "$revision" in q.query}
    for check in revision_queries(name, analysis, canary, None, label="replica"):
        if "min" in check:
            continue  # Flagger skips a step without traffic on its own (no metric value: the check is retried)
        if check["name"] in by_revision:
            continue  # Flagger names no revision: a query per revision has no canary to select (docs/kubernetes.md)
        template_name = f"{ctx.name(name)}-{check['name']}"
        out.append(Manifest(file, {
            "apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
            "metadata": ctx.metadata(name, name=template_name),
            "spec": {"provider": {"type": "prometheus", "address": value("canary.prometheusUrl", PROMETHEUS_URL)},
                     "query": check["query"]},
        }, when))
        refs.append({"name": check["name"], "templateRef": {"name": template_name},
                     "thresholdRange": {"max": check["max"]}, "interval": _interval(analysis)})
    steps = service.rollout.steps[:-1]
    # Flagger makes the Services; the primary's and the canary's carry the app's labels, so the ServiceMonitor
    # scrapes both revisions (the apex one selects the primary's pods again, so it gets none)
    labelled = {"labels": ctx.labels(name)}
    spec: dict[str, Any] = {
        "provider": value("canary.flaggerProvider", "istio"),
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": ctx.name(name)},
        "progressDeadlineSeconds": whole_seconds(service.rollout.progress_deadline_s),
        "service": {"port": 80, "targetPort": "http", "primary": labelled, "canary": labelled},
    }
    if service.autoscale is not None:
        spec["autoscalerRef"] = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                                 "name": ctx.name(name)}
    out.append(Manifest(file, {
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary", "metadata": ctx.metadata(name),
        "spec": {
            **spec,
            "analysis": {"interval": _interval(analysis), "threshold": analysis.failure_limit,
                         "stepWeights": steps or [100], "metrics": refs},
        },
    }, when))
    return out
