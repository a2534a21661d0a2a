"""A spec as a Helm chart or as plain manifests: the files, as text, from plain data (no I/O).

:func:`render_objects` builds every object once (:mod:`lichen.deploy.workloads`,
``gateway_manifests``, ``job_manifests``, ``monitoring_manifests``,
``canary_manifests``); :func:`chart_files` writes them as chart templates
with ``values.yaml``, ``values.schema.json``, ``Chart.yaml`` and
``NOTES.txt``, and :func:`manifest_files` as the plain manifests the
chart's default values give. Writing the files is the CLI's
(:func:`lichen.deploy.writing.write_tree`).
"""

from __future__ import annotations

import json
from typing import Any

from lichen.deploy.canary_manifests import argo_manifests, flagger_manifests
from lichen.deploy.chart_values import (
    Condition,
    Manifest,
    collect_values,
    dump_yaml,
    helm_document,
    plain,
    set_path,
)
from lichen.deploy.gateway_manifests import gateway_manifests
from lichen.deploy.job_manifests import job_manifests
from lichen.deploy.monitoring_manifests import monitoring_manifests
from lichen.deploy.workloads import (
    RenderContext,
    autoscaler,
    deployment,
    disruption_budget,
    gateway_url,
    service_object,
)
from lichen.gateway.configs import service_paths

CHOICES: dict[str, tuple[str, tuple[str, ...]]] = {
    "ingress.kind": ("ingress", ("ingress", "httproute", "none")),
    "canary.provider": ("argo", ("argo", "flagger")),
}
"""values that choose between renderings: (default, allowed)"""
SWITCHES: dict[str, bool] = {
    "networkPolicy.enabled": True,
    "serviceMonitor.enabled": True,
    "prometheusRule.enabled": True,
    "dashboards.enabled": True,
    "state.createClaim": True,
    "jobs.runOnInstall": False,
}
FREE_FORM = ("resources", "annotations", "labels", "claimSpec", "monitoringNamespaceLabels")
"""values that are Kubernetes fields of their own (any keys); every other mapping is closed by the schema"""


def render_objects(ctx: RenderContext) -> list[Manifest]:
    spec = ctx.spec
    urls = {name: gateway_url(ctx) + path for name, path in service_paths(spec).items()}
    out: list[Manifest] = []
    for name, service in spec.services.items():
        file = f"service-{name}.yaml"
        canary = service.rollout.strategy == "canary"
        if canary:
            out.append(Manifest(file, deployment(ctx, name, service, urls), (Condition("canary.provider", "argo",
                                                                                         negate=True),)))
            out += argo_manifests(ctx, name, service, urls, file)
            out += flagger_manifests(ctx, name, service, file)
            # Flagger owns the Service of the Deployment it watches (and adds -primary and -canary)
            out.append(Manifest(file, service_object(ctx, name), (Condition("canary.provider", "flagger",
                                                                            negate=True),)))
        else:
            out.append(Manifest(file, deployment(ctx, name, service, urls)))
            out.append(Manifest(file, service_object(ctx, name)))
        if service.autoscale is not None:
            out.append(Manifest(file, autoscaler(ctx, name, service)))
        out.append(Manifest(file, disruption_budget(ctx, name, service)))
    out += gateway_manifests(ctx)
    out += job_manifests(ctx)
    out += monitoring_manifests(ctx)
    return out


def default_values(manifests: list[Manifest], ctx: RenderContext) -> dict[str, Any]:
    values: dict[str, Any] = {"image": {"repository": ctx.repository, "tag": ctx.image_tag}}
    for path, (default, _) in CHOICES.items():
        set_path(values, path, default)
    for path, on in SWITCHES.items():
        set_path(values, path, on)
    for manifest in manifests:
        collect_values(manifest.obj, values)
    set_path(values, "ingress.gatewayName", "")
    set_path(values, "secrets.name", ctx.name("secrets"))
    return values


def _schema(node: Any, path: str = "") -> dict[str, Any]:
    if path in CHOICES:
        return {"type": "string", "enum": list(CHOICES[path][1])}
    if isinstance(node, bool):
        return {"type": "boolean"}
    if isinstance(node, int):
        return {"type": "integer", "minimum": 0}
    if isinstance(node, float):
        return {"type": "number"}
    if isinstance(node, str):
        return {"type": "string"}
    if isinstance(node, list):
        return {"type": "array"}
    if isinstance(node, dict):
        if path.rsplit(".", 1)[-1] in FREE_FORM:
            return {"type": "object"}
        return {"type": "object", "additionalProperties": False,
                "properties": {key: _schema(item, f"{path}.{key}" if path else key) for key, item in node.items()}}
    return {}


def values_schema(values: dict[str, Any]) -> dict[str, Any]:
    """A JSON schema of the values: every section closed (a misspelt key is refused by ``helm`` itself),
    choices as enums, counts as non-negative integers."""
    return {"$schema": "http://json-schema.org/draft-07/schema#", "title": "values", **_schema(values)}


def _join(documents: list[str]) -> str:
    return "---\n".join(documents)


NOTES = """\
{{ .Chart.Name }} {{ .Chart.AppVersion }} is installed as release {{ .Release.Name }} in {{ .Release.Namespace }}.

The gateway answers on the Service {{ .Chart.Name }}-gateway (port 80){{ if eq .Values.ingress.kind "ingress" }}, \
behind the Ingress {{ .Chart.Name }}-gateway{{ else if eq .Values.ingress.kind "httproute" }}, behind the HTTPRoute \
{{ .Chart.Name }}-gateway on Gateway {{ .Values.ingress.gatewayName }}{{ end }}:

  kubectl -n {{ .Release.Namespace }} port-forward svc/{{ .Chart.Name }}-gateway 8080:80

Secrets the app declares are read from the Secret {{ .Values.secrets.name }}:

  kubectl -n {{ .Release.Namespace }} create secret generic {{ .Values.secrets.name }} --from-literal=NAME=value

Rendered by `lichen render helm`; docs/kubernetes.md maps every spec field to these objects.
"""


def chart_files(ctx: RenderContext) -> dict[str, str]:
    """The chart: relative path -> text."""
    manifests = render_objects(ctx)
    values = default_values(manifests, ctx)
    by_file: dict[str, list[str]] = {}
    for manifest in manifests:
        by_file.setdefault(manifest.file, []).append(helm_document(manifest))
    files = {f"templates/{name}": _join(docs) for name, docs in by_file.items()}
    files["templates/NOTES.txt"] = NOTES
    files["Chart.yaml"] = dump_yaml({
        "apiVersion": "v2", "name": ctx.app, "description": f"The {ctx.app} app, rendered from lichen.yaml by Lichen.",
        "type": "application", "version": "0.1.0", "appVersion": ctx.image_tag,
        "kubeVersion": ">=1.29.0-0", "annotations": {"lichen.dev/rendered-from": "lichen.yaml"},
    })
    header = f"# Values of the {ctx.app} chart; every default comes from lichen.yaml (lichen render helm).\n"
    files["values.yaml"] = header + dump_yaml(values)
    files["values.schema.json"] = json.dumps(values_schema(values), indent=2) + "\n"
    files[".helmignore"] = "*.tmp\n.*.swp\n"
    return files


def manifest_files(ctx: RenderContext) -> dict[str, str]:
    """Plain manifests with the chart's default values: relative path -> text."""
    manifests = render_objects(ctx)
    values = default_values(manifests, ctx)
    by_file: dict[str, list[str]] = {}
    for manifest in manifests:
        if all(condition.holds(values) for condition in manifest.when):
            by_file.setdefault(manifest.file, []).append(dump_yaml(plain(manifest.obj)))
    return {name: _join(docs) for name, docs in by_file.items()}
