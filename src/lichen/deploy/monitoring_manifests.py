"""Observability and state in the cluster: ServiceMonitors, the PrometheusRule, the Grafana dashboard, the state PVC.

The ServiceMonitors relabel every scraped series into the labels ``lichen
up``'s scraper gives it (``service``, ``revision``, ``replica``, ``job``), so
the PrometheusRule can hold **the same rule groups** the embedded Prometheus
evaluates, unchanged: the default pack with the spec's SLOs and thresholds,
then the user's rule files.
"""

from __future__ import annotations

import json
from typing import Any

from lichen.deploy.chart_values import Condition, Manifest, merged, value
from lichen.deploy.workloads import REVISION_LABEL, ROLLOUT_REVISION_LABEL, RenderContext
from lichen.spec.quantities import format_duration


def _meta(label: str) -> str:
    return "__meta_kubernetes_pod_label_" + "".join(c if c.isalnum() else "_" for c in label)


def relabelings(job: str) -> list[dict[str, Any]]:
    """The operator's target labels turned into ``lichen up``'s: the pod's component is ``service``, its name
    ``replica``, its template hash (Deployment or Argo Rollout) ``revision``, and ``job`` says what it is."""
    return [
        {"sourceLabels": [_meta("app.kubernetes.io/component")], "targetLabel": "service", "action": "replace"},
        {"sourceLabels": ["__meta_kubernetes_pod_name"], "targetLabel": "replica", "action": "replace"},
        {"sourceLabels": [_meta(REVISION_LABEL), _meta(ROLLOUT_REVISION_LABEL)], "separator": "",
         "targetLabel": "revision", "action": "replace"},
        {"targetLabel": "job", "replacement": job, "action": "replace"},
        {"regex": "pod|container|endpoint", "action": "labeldrop"},
    ]


def service_monitor(ctx: RenderContext, component: str, path: str, job: str) -> dict[str, Any]:
    obs = ctx.spec.observability
    metadata = ctx.metadata(component)
    metadata["labels"] = {**metadata["labels"], **merged(value("serviceMonitor.labels", {}, block=True))}
    return {
        "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": metadata,
        "spec": {
            "selector": {"matchLabels": ctx.selector(component)},
            "endpoints": [{"port": "http", "path": path, "interval": format_duration(obs.scrape_interval_s),
                           "scrapeTimeout": format_duration(obs.scrape_timeout_s),
                           "relabelings": relabelings(job)}],
        },
    }


def provisioned_dashboard(dashboard: dict[str, Any]) -> dict[str, Any]:
    """The export made for Grafana's import dialog, made for its provisioning sidecar instead: the sidecar never
    fills ``__inputs``, so the data source becomes a dashboard variable (the default Prometheus, switchable)."""
    board = json.loads(json.dumps(dashboard).replace("${DS_PROMETHEUS}", "${datasource}"))
    board.pop("__inputs", None)
    board.pop("__requires", None)
    variables = board.setdefault("templating", {}).setdefault("list", [])
    variables.insert(0, {"name": "datasource", "label": "data source", "type": "datasource", "query": "prometheus",
                         "hide": 0, "current": {}})
    return board


def monitoring_manifests(ctx: RenderContext) -> list[Manifest]:
    when_monitor = (Condition("serviceMonitor.enabled"),)
    out = [Manifest("servicemonitor.yaml", service_monitor(ctx, name, service.metrics_path, "replica"), when_monitor)
           for name, service in ctx.spec.services.items()]
    out.append(Manifest("servicemonitor.yaml", service_monitor(ctx, "gateway", "/metrics", "gateway"), when_monitor))
    if ctx.rule_groups:
        metadata = ctx.metadata("rules")
        metadata["labels"] = {**metadata["labels"], **merged(value("prometheusRule.labels", {}, block=True))}
        rule = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule", "metadata": metadata,
                "spec": {"groups": ctx.rule_groups}}
        out.append(Manifest("prometheusrule.yaml", rule, (Condition("prometheusRule.enabled"),)))
    if ctx.dashboard is not None:
        board = {"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {**ctx.metadata("dashboard"),
                              "labels": {**ctx.labels("dashboard"),
                                         "grafana_dashboard": value("dashboards.labelValue", "1")}},
                 "data": {f"{ctx.app}.json": json.dumps(provisioned_dashboard(ctx.dashboard), indent=1, sort_keys=True)}}
        out.append(Manifest("dashboard.yaml", board, (Condition("dashboards.enabled"),)))
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
             "metadata": ctx.metadata("state", annotations={"helm.sh/resource-policy": "keep"}),
             "spec": value("state.claimSpec", {"accessModes": ["ReadWriteMany"],
                                               "resources": {"requests": {"storage": "10Gi"}}}, block=True)}
    out.append(Manifest("state.yaml", claim, (Condition("state.createClaim"),)))
    return out
