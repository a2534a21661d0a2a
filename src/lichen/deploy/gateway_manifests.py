"""The gateway in the cluster: its config as a ConfigMap, its Deployment and Service, the Ingress or HTTPRoute
in front of it, and the NetworkPolicy that lets only it reach the services.

The gateway is the same code as under ``lichen up`` and keeps every rule of
``gateway:`` (routes, rate limits, auth, retries, admission): its config
is :func:`lichen.gateway.configs.render_config` of the spec, with each
service's upstream being the service's ClusterIP Service. The Ingress or
HTTPRoute only brings outside traffic to it, so no route needs to be
expressible by the Ingress; only its host names do.
"""

from __future__ import annotations

import re
from typing import Any

from lichen.deploy.chart_values import Condition, Expr, Manifest, value
from lichen.deploy.workloads import (
    GATEWAY_PORT,
    PRE_STOP_S,
    SERVICE_PORT,
    STATE_DIR,
    STATE_MOUNTS,
    RenderContext,
    RenderRefused,
    container_security,
    secret_env,
    serving_pod,
    state_volumes,
)
from lichen.gateway.configs import Endpoint, GatewayConfig, render_config, routes_of

CONFIG_DIR = "/etc/lichen"
GATEWAY_GRACE_S = 30
"""the gateway's own drain after its preStop (Kubernetes' default grace)"""
HOST_PATTERN = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def gateway_config(ctx: RenderContext) -> GatewayConfig:
    """``lichen up``'s gateway config with each service's ClusterIP Service as its one upstream."""
    endpoints = {name: [Endpoint(url=f"http://{ctx.name(name)}", replica=ctx.name(name))]
                 for name in ctx.spec.services}
    config = render_config(ctx.spec, endpoints, keys_db=f"{STATE_DIR}/keys.db")
    # no controller to wake a service at zero in the cluster (HPA's minimum is 1): no activation queue
    services = {name: service.model_copy(update={"activation": None}) for name, service in config.services.items()}
    # TLS ends at the Ingress or Gateway in front (its certificate is a Secret there), not at the gateway pod
    settings = config.settings.model_copy(update={"tls": None})
    return config.model_copy(update={"host": "0.0.0.0", "port": GATEWAY_PORT, "services": services,
                                     "generation": ctx.image_tag, "settings": settings})


def ingress_hosts(ctx: RenderContext) -> list[str]:
    """``kubernetes.ingress_host`` and every host a route matches on, checked as Kubernetes host names."""
    hosts: list[str] = []
    wanted: list[tuple[tuple[str | int, ...], str]] = []
    if ctx.spec.kubernetes.ingress_host:
        wanted.append((("kubernetes", "ingress_host"), ctx.spec.kubernetes.ingress_host))
    for name, service in ctx.spec.services.items():
        for index, route in enumerate(routes_of(name, service)):
            if route.host:
                wanted.append((("services", name, "routes", index, "host"), route.host))
    for path, host in wanted:
        bare = host.split(":")[0].lower()
        if not HOST_PATTERN.match(bare) or len(bare) > 253:
            raise RenderRefused(path, f"the Ingress cannot express host {host!r}: Kubernetes takes a DNS name, "
                                      "optionally with one leading `*.` (e.g. api.example.com or *.example.com)")
        if bare not in hosts:
            hosts.append(bare)
    return hosts


def gateway_manifests(ctx: RenderContext) -> list[Manifest]:
    spec = ctx.spec
    name = "gateway"
    config = gateway_config(ctx)
    config_map = {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": ctx.metadata(name),
        "data": {"gateway.json": config.model_dump_json(indent=2)},
    }
    jwt = spec.gateway.auth.jwt
    secrets = [jwt.secret_env] if jwt is not None and jwt.secret_env else []
    container = {
        "name": name,
        "image": ctx.image(),
        "imagePullPolicy": value("image.pullPolicy", "IfNotPresent"),
        "command": ["python", "-m", "lichen", "gateway", "--config", f"{CONFIG_DIR}/gateway.json"],
        "ports": [{"name": "http", "containerPort": GATEWAY_PORT, "protocol": "TCP"}],
        "env": [{"name": "PYTHONUNBUFFERED", "value": "1"}, *secret_env(ctx, secrets)],
        "resources": value("gateway.resources", {"requests": {"cpu": "500m", "memory": "256Mi"},
                                                 "limits": {"memory": "512Mi"}}, block=True),
        "readinessProbe": {"httpGet": {"path": "/-/healthz", "port": "http"}, "periodSeconds": 1,
                           "timeoutSeconds": 1, "failureThreshold": 3, "successThreshold": 1},
        "livenessProbe": {"httpGet": {"path": "/-/healthz", "port": "http"}, "periodSeconds": 2,
                          "timeoutSeconds": 1, "failureThreshold": 3, "successThreshold": 1},
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRE_STOP_S)]}}},
        "securityContext": container_security(ctx),
        "volumeMounts": [*STATE_MOUNTS, {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}],
    }
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": ctx.metadata(name),
        "spec": {
            "replicas": value("gateway.replicas", 2),
            "selector": {"matchLabels": ctx.selector(name)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": serving_pod(ctx, name, container, GATEWAY_GRACE_S,
                                    [*state_volumes(ctx), {"name": "config", "configMap": {"name": ctx.name(name)}}]),
        },
    }
    service = {
        "apiVersion": "v1", "kind": "Service", "metadata": ctx.metadata(name),
        "spec": {"type": value("gateway.serviceType", "ClusterIP"), "selector": ctx.selector(name),
                 "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]},
    }
    budget = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": ctx.metadata(name),
              "spec": {"maxUnavailable": 1, "selector": {"matchLabels": ctx.selector(name)}}}
    out = [Manifest("gateway.yaml", obj) for obj in (config_map, deployment, service, budget)]
    out += exposure_manifests(ctx)
    out += network_policies(ctx)
    return out


def exposure_manifests(ctx: RenderContext) -> list[Manifest]:
    hosts = ingress_hosts(ctx)
    backend = {"service": {"name": ctx.name("gateway"), "port": {"number": 80}}}
    paths = [{"path": "/", "pathType": "Prefix", "backend": backend}]
    rules = [{"host": host, "http": {"paths": paths}} for host in hosts] or [{"http": {"paths": paths}}]
    ingress = {
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": ctx.metadata("gateway", annotations=value("ingress.annotations", {}, block=True)),
        "spec": {"ingressClassName": value("ingress.className", "nginx"), "rules": rules},
    }
    route: dict[str, Any] = {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": ctx.metadata("gateway"),
        "spec": {
            "parentRefs": [{"name": Expr('required "ingress.gatewayName: the Gateway API Gateway this HTTPRoute '
                                         'attaches to" (index .Values "ingress" "gatewayName")', "gateway"),
                            "namespace": value("ingress.gatewayNamespace", ctx.spec.kubernetes.namespace)}],
            **({"hostnames": hosts} if hosts else {}),
            "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                       "backendRefs": [{"name": ctx.name("gateway"), "port": 80}]}],
        },
    }
    return [Manifest("ingress.yaml", ingress, (Condition("ingress.kind", "ingress"),)),
            Manifest("httproute.yaml", route, (Condition("ingress.kind", "httproute"),))]


def network_policies(ctx: RenderContext) -> list[Manifest]:
    """Default deny for every pod of the app; the gateway takes traffic from anywhere; services take it only
    from the gateway; the metrics ports also from the monitoring namespace's Prometheus."""
    app_pods = {"matchLabels": {"app.kubernetes.io/name": ctx.app, "app.kubernetes.io/instance": ctx.instance}}
    monitoring = {"namespaceSelector": {"matchLabels": value("networkPolicy.monitoringNamespaceLabels",
                                                             {"kubernetes.io/metadata.name": "monitoring"},
                                                             block=True)}}
    deny = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": ctx.metadata("default-deny", name=ctx.name("default-deny")),
            "spec": {"podSelector": app_pods, "policyTypes": ["Ingress"]}}
    gateway = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": ctx.metadata("gateway"),
               "spec": {"podSelector": {"matchLabels": ctx.selector("gateway")}, "policyTypes": ["Ingress"],
                        "ingress": [{"ports": [{"port": GATEWAY_PORT, "protocol": "TCP"}]}]}}
    out = [deny, gateway]
    for name in ctx.spec.services:
        out.append({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": ctx.metadata(name),
            "spec": {"podSelector": {"matchLabels": ctx.selector(name)}, "policyTypes": ["Ingress"],
                     "ingress": [{"from": [{"podSelector": {"matchLabels": ctx.selector("gateway")}}, monitoring],
                                  "ports": [{"port": SERVICE_PORT, "protocol": "TCP"}]}]},
        })
    return [Manifest("networkpolicy.yaml", obj, (Condition("networkPolicy.enabled"),)) for obj in out]
