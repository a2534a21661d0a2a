"""The Kubernetes objects of one service: Deployment (or Argo Rollout), Service, HPA, PDB.

Pure functions of the spec. Everything ``lichen up`` decides from the spec
is written out explicitly (probe periods and thresholds, grace, surge), so
the cluster does what the local run does; what only an operator would tune
per cluster (replica counts, resources, the image) goes through a chart
value whose default is the spec's.

Kubernetes counts probe and grace times in whole seconds, so a sub-second
value is rounded up (:func:`whole_seconds`); docs/kubernetes.md lists it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from lichen.control.placing import thread_caps
from lichen.control.probing import STARTUP_WINDOW_S
from lichen.deploy.chart_values import Expr, release_name, release_namespace, value
from lichen.redacting import rules_text
from lichen.sdk.settings import ReplicaSettings
from lichen.spec.models import AppSpec, ProbeSpec, ServiceSpec
from lichen.spec.quantities import format_memory_bytes

RUN_AS_UID = 10001
"""the numeric user of every container: the image's USER and the pods' runAsUser"""
APP_DIR = "/app"
STATE_DIR = "/app/.lichen"
"""the app's state (datasets, the model registry, API keys): one volume every pod of the app mounts"""
SERVICE_PORT = 8000
GATEWAY_PORT = 8080
PRE_STOP_S = 5
"""seconds a stopping pod keeps serving while the Service's endpoints drop it (kube-proxy and ingress lag)"""
STARTUP_S = math.ceil(STARTUP_WINDOW_S)
"""seconds a replica may take to listen before liveness probes count, as under ``lichen up``"""
REVISION_LABEL = "pod-template-hash"
ROLLOUT_REVISION_LABEL = "rollouts-pod-template-hash"


class RenderRefused(Exception):
    """The spec asks for something the rendered objects cannot express; ``path`` is the spec field."""

    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


@dataclass(frozen=True)
class RenderContext:
    """What rendering needs besides the spec: the image tag and the rule groups and dashboard to ship."""

    spec: AppSpec
    image_tag: str
    rule_groups: list[dict[str, Any]] = field(default_factory=list)
    dashboard: dict[str, Any] | None = None

    @property
    def app(self) -> str:
        return self.spec.app

    @property
    def namespace(self) -> Expr:
        return release_namespace(self.spec.kubernetes.namespace)

    @property
    def instance(self) -> Expr:
        return release_name(self.spec.app)

    def name(self, component: str) -> str:
        return f"{self.app}-{component}"

    def selector(self, component: str) -> dict[str, Any]:
        # `app` first: Flagger (and Istio) select a workload's pods by it, and it must be one service's own
        return {"app": self.name(component), "app.kubernetes.io/name": self.app,
                "app.kubernetes.io/instance": self.instance, "app.kubernetes.io/component": component}

    def labels(self, component: str) -> dict[str, Any]:
        return {**self.selector(component), "app.kubernetes.io/part-of": self.app,
                "app.kubernetes.io/version": value("image.tag", self.image_tag),
                "app.kubernetes.io/managed-by": Expr(".Release.Service", "lichen")}

    def metadata(self, component: str, name: str | None = None, **extra: Any) -> dict[str, Any]:
        return {"name": name or self.name(component), "namespace": self.namespace, "labels": self.labels(component),
                **extra}

    @property
    def repository(self) -> str:
        registry = self.spec.kubernetes.image_registry
        return f"{registry.rstrip('/')}/{self.app}" if registry else self.app

    def image(self, own: str | None = None) -> Expr | str:
        """The app image (``image.repository`` and ``image.tag``), or a service's own ``image``."""
        if own:
            return own
        return Expr('printf "%s:%s" (index .Values "image" "repository") (index .Values "image" "tag")',
                    f"{self.repository}:{self.image_tag}")


def whole_seconds(seconds: float, minimum: int = 1) -> int:
    """A duration as Kubernetes' integer seconds, rounded up (a 0.5 s timeout waits 1 s)."""
    return max(minimum, math.ceil(seconds - 1e-9))


def probe(spec: ProbeSpec, *, liveness: bool) -> dict[str, Any]:
    return {
        "httpGet": {"path": spec.path, "port": "http"},
        "initialDelaySeconds": whole_seconds(spec.initial_delay_s, minimum=0),
        "periodSeconds": whole_seconds(spec.period_s),
        "timeoutSeconds": whole_seconds(spec.timeout_s),
        "failureThreshold": spec.failure_threshold,
        "successThreshold": 1 if liveness else spec.success_threshold,
    }


def kube_cpu(cores: float) -> str:
    millis = round(cores * 1000)
    return f"{millis // 1000}" if millis % 1000 == 0 else f"{millis}m"


def resources(cpu: float | None, memory: int | None, gpu: int) -> dict[str, Any]:
    """Requests equal to limits (Guaranteed QoS), as ``lichen up`` reserves what it limits and never overcommits."""
    amounts: dict[str, str] = {}
    if cpu is not None:
        amounts["cpu"] = kube_cpu(cpu)
    if memory is not None:
        amounts["memory"] = format_memory_bytes(memory)
    limits = dict(amounts)
    if gpu:
        limits["nvidia.com/gpu"] = str(gpu)
    out: dict[str, Any] = {}
    if amounts:
        out["requests"] = amounts
    if limits:
        out["limits"] = limits
    return out


def container_security(ctx: RenderContext) -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
            "runAsUser": value("podSecurity.runAsUser", RUN_AS_UID),
            "runAsGroup": value("podSecurity.runAsGroup", RUN_AS_UID),
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


def pod_security(ctx: RenderContext) -> dict[str, Any]:
    return {"runAsNonRoot": True, "runAsUser": value("podSecurity.runAsUser", RUN_AS_UID),
            "runAsGroup": value("podSecurity.runAsGroup", RUN_AS_UID),
            "fsGroup": value("podSecurity.fsGroup", RUN_AS_UID), "seccompProfile": {"type": "RuntimeDefault"}}


def state_volumes(ctx: RenderContext) -> list[dict[str, Any]]:
    return [{"name": "tmp", "emptyDir": {}},
            {"name": "state", "persistentVolumeClaim": {"claimName": ctx.name("state")}}]


STATE_MOUNTS = [{"name": "tmp", "mountPath": "/tmp"}, {"name": "state", "mountPath": STATE_DIR}]


def secret_env(ctx: RenderContext, names: list[str]) -> list[dict[str, Any]]:
    """Each declared secret from the app's Secret (``secrets.name``): a reference, never the value."""
    return [{"name": name, "valueFrom": {"secretKeyRef": {"name": value("secrets.name", ctx.name("secrets")),
                                                          "key": name}}} for name in names]


def gateway_url(ctx: RenderContext) -> str:
    return f"http://{ctx.name('gateway')}"


def service_env(ctx: RenderContext, name: str, service: ServiceSpec, revision_label: str,
                service_urls: dict[str, str]) -> list[dict[str, Any]]:
    tracing = ctx.spec.observability.tracing
    settings = ReplicaSettings(
        service=name, port=SERVICE_PORT, app_dir=APP_DIR, grace_s=service.termination_grace_s,
        timeout_s=service.timeout_s, max_concurrency=service.max_concurrency, metrics_path=service.metrics_path,
        slo_latency_ms=(service.slo.latency_ms,), gateway_url=gateway_url(ctx), service_urls=service_urls,
        # the rules only: no salt reaches a chart, so a `hash` field is dropped there (docs/kubernetes.md)
        redact=rules_text(ctx.spec.observability.redact_rules()) or None, secret_names=tuple(service.secrets) or None,
        # the same collector from a pod: the endpoint must be one the cluster reaches (docs/kubernetes.md)
        trace_endpoint=tracing.traces_url() if tracing is not None else None,
        trace_sampling_ratio=tracing.sampling_ratio if tracing is not None else 1.0,
    )
    env: list[dict[str, Any]] = [{"name": "PYTHONUNBUFFERED", "value": "1"}]
    env += [{"name": key, "value": text} for key, text in settings.to_env().items()]
    env += [{"name": "LICHEN_REPLICA", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "LICHEN_REVISION",
             "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{revision_label}']"}}}]
    plain_env = {**thread_caps(service.resources.cpu), **service.env}
    env += [{"name": key, "value": text} for key, text in plain_env.items()]
    return env + secret_env(ctx, service.secrets)


def pod_template(ctx: RenderContext, name: str, service: ServiceSpec, revision_label: str,
                 service_urls: dict[str, str]) -> dict[str, Any]:
    base = f"services.{name}"
    container = {
        "name": name,
        "image": ctx.image(service.image),
        "imagePullPolicy": value("image.pullPolicy", "IfNotPresent"),
        "args": [name],
        "ports": [{"name": "http", "containerPort": SERVICE_PORT, "protocol": "TCP"}],
        "env": service_env(ctx, name, service, revision_label, service_urls),
        "resources": value(f"{base}.resources", resources(service.resources.cpu, service.resources.memory,
                                                           service.resources.gpu), block=True),
        # `lichen up` waits up to STARTUP_S for a new replica's first answer before liveness counts
        "startupProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 1, "timeoutSeconds": 1,
                         "failureThreshold": STARTUP_S, "successThreshold": 1},
        "readinessProbe": probe(service.probes.readiness, liveness=False),
        "livenessProbe": probe(service.probes.liveness, liveness=True),
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRE_STOP_S)]}}},
        "securityContext": container_security(ctx),
        "volumeMounts": STATE_MOUNTS,
    }
    return serving_pod(ctx, name, container, whole_seconds(service.termination_grace_s), state_volumes(ctx))


def serving_pod(ctx: RenderContext, component: str, container: dict[str, Any], grace_s: int,
                volumes: list[dict[str, Any]]) -> dict[str, Any]:
    """The pod template of a long-running component (a service, the gateway): restricted, spread across nodes,
    and given ``grace_s`` after its preStop sleep, which counts against the grace period."""
    return {
        "metadata": {"labels": ctx.labels(component)},
        "spec": {
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": pod_security(ctx),
            "terminationGracePeriodSeconds": grace_s + PRE_STOP_S,
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                           "whenUnsatisfiable": "ScheduleAnyway",
                                           "labelSelector": {"matchLabels": ctx.selector(component)}}],
            "containers": [container],
            "volumes": volumes,
        },
    }


def rolling_strategy(service: ServiceSpec) -> dict[str, Any]:
    return {"type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": service.rollout.max_surge, "maxUnavailable": service.rollout.max_unavailable}}


def replicas_field(name: str, service: ServiceSpec) -> dict[str, Any]:
    # with an HPA the HPA owns the count: a replicas field would reset it at every upgrade
    if service.autoscale is not None:
        return {}
    return {"replicas": value(f"services.{name}.replicas", service.replicas)}


def deployment(ctx: RenderContext, name: str, service: ServiceSpec, service_urls: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": ctx.metadata(name),
        "spec": {
            **replicas_field(name, service),
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": whole_seconds(service.rollout.progress_deadline_s),
            "selector": {"matchLabels": ctx.selector(name)},
            "strategy": rolling_strategy(service),
            "template": pod_template(ctx, name, service, REVISION_LABEL, service_urls),
        },
    }


def service_object(ctx: RenderContext, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Service", "metadata": ctx.metadata(name),
        "spec": {"type": "ClusterIP", "selector": ctx.selector(name),
                 "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]},
    }


def disruption_budget(ctx: RenderContext, name: str, service: ServiceSpec) -> dict[str, Any]:
    """At most ``max_unavailable`` (at least 1, so a node drain can always proceed) pods evicted at once."""
    unavailable = service.rollout.max_unavailable
    if unavailable in (0, "0%"):
        unavailable = 1
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": ctx.metadata(name),
            "spec": {"maxUnavailable": unavailable, "selector": {"matchLabels": ctx.selector(name)}}}


def _scale_target(service: ServiceSpec) -> dict[str, Any]:
    if service.rollout.strategy != "canary":
        return {"apiVersion": "apps/v1", "kind": "Deployment"}
    argo = '(eq (index .Values "canary" "provider") "argo")'
    return {"apiVersion": Expr(f'ternary "argoproj.io/v1alpha1" "apps/v1" {argo}', "argoproj.io/v1alpha1"),
            "kind": Expr(f'ternary "Rollout" "Deployment" {argo}', "Rollout")}


HPA_METRICS = {
    "inflight": "lichen_inflight_requests",
    "rps": "lichen_requests_per_second",
    "latency_p95_ms": "lichen_request_latency_p95_ms",
}
"""per-pod custom metrics an adapter serves (docs/kubernetes.md gives prometheus-adapter's rules for them)"""
MAX_STABILIZATION_S = 3600


def autoscaler(ctx: RenderContext, name: str, service: ServiceSpec) -> dict[str, Any]:
    """An HPA v2 with KPA's rates, windows and stabilisation translated into ``behavior``; it scales the
    service's Deployment, or for a canary the workload ``canary.provider`` renders (Argo's Rollout, or the
    Deployment Flagger watches)."""
    scale = service.autoscale
    assert scale is not None
    if scale.metric == "cpu":
        metric: dict[str, Any] = {"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "AverageValue", "averageValue": kube_cpu(scale.target)}}}
    else:
        target = f"{scale.target:g}" if scale.metric != "latency_p95_ms" else f"{round(scale.target)}"
        metric = {"type": "Pods", "pods": {"metric": {"name": HPA_METRICS[scale.metric]},
                                           "target": {"type": "AverageValue", "averageValue": target}}}
    period_s = min(1800, whole_seconds(scale.interval_s))
    up_percent = max(1, round((scale.max_scale_up_rate - 1) * 100))
    down_percent = max(1, min(100, round((1 - 1 / scale.max_scale_down_rate) * 100)))
    # KPA averages its stable window before it scales down, which holds a scale-down as long as HPA's window does
    down_window_s = min(MAX_STABILIZATION_S, whole_seconds(max(scale.scale_down_stabilization_s,
                                                                scale.stable_window_s), minimum=0))
    up_window_s = min(MAX_STABILIZATION_S, whole_seconds(scale.scale_up_stabilization_s, minimum=0))
    base = f"services.{name}.autoscaling"
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": ctx.metadata(name),
        "spec": {
            "scaleTargetRef": {**_scale_target(service), "name": ctx.name(name)},
            "minReplicas": value(f"{base}.minReplicas", max(1, scale.min)),
            "maxReplicas": value(f"{base}.maxReplicas", scale.max),
            "metrics": [metric],
            "behavior": {
                "scaleUp": {"stabilizationWindowSeconds": up_window_s, "selectPolicy": "Max",
                            "policies": [{"type": "Percent", "value": up_percent, "periodSeconds": period_s}]},
                "scaleDown": {"stabilizationWindowSeconds": down_window_s, "selectPolicy": "Max",
                              "policies": [{"type": "Percent", "value": down_percent, "periodSeconds": period_s}]},
            },
        },
    }
