"""What rendering reads besides the spec (the rule files, the dashboard), and what it refuses before it starts.

``lichen render``, ``lichen deploy`` and the tests build their
:class:`~lichen.deploy.workloads.RenderContext` here, so the chart always
ships the rule groups the embedded Prometheus evaluates: the default pack
(unless ``observability.default_rules: false``), then each file of
``observability.rules`` in order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from lichen.deploy.gateway_manifests import ingress_hosts
from lichen.deploy.workloads import RenderContext, RenderRefused
from lichen.observe.default_rules import default_rules
from lichen.observe.grafana import grafana_dashboard
from lichen.observe.rule_files import check_rule_file
from lichen.spec.documents import LocatingSafeLoader
from lichen.spec.models import AppSpec

CUDA_HINTS = ("cuda", "nvidia", "pytorch", "tensorflow")
RESERVED = ("gateway", "default-deny", "rules", "dashboard", "state", "secrets")
"""components the chart names itself (``APP-gateway``, ...): a service or job of that name would collide"""
NAME_LIMIT = 63
"""a Service's name and the ``app`` label's value are at most 63 characters (DNS-1035, label values)"""
CRON_NAME_LIMIT = 52
"""a CronJob's name leaves 11 characters for the Jobs it creates"""


def cuda_image(name: str | None) -> bool:
    """Whether an image's name says it carries CUDA (``nvidia/cuda:...``, ``pytorch/pytorch:...-cuda...``)."""
    return bool(name) and any(hint in name.lower() for hint in CUDA_HINTS)


def check_renderable(ctx: RenderContext) -> None:
    """Refuse, naming the field, what the cluster could not run: a host name the Ingress cannot take, a name the
    chart uses itself or one past Kubernetes' length limits, a GPU on an image without CUDA."""
    spec = ctx.spec
    ingress_hosts(ctx)
    for section, items in (("services", spec.services), ("jobs", spec.jobs)):
        for name, item in items.items():
            limit = CRON_NAME_LIMIT if getattr(item, "schedule", None) else NAME_LIMIT
            full = ctx.name(name)
            if name in RESERVED:
                raise RenderRefused((section, name), f"{name!r} names an object the chart makes itself ({full}); "
                                                     f"rename it (the chart reserves {', '.join(RESERVED)})")
            if len(full) > limit:
                raise RenderRefused((section, name), f"the Kubernetes name {full!r} is {len(full)} characters, over "
                                                     f"the {limit} Kubernetes allows; shorten the app's or its name")
    base = spec.kubernetes.base_image
    for name, service in spec.services.items():
        if service.resources.gpu and not cuda_image(service.image or base):
            raise RenderRefused(("services", name, "resources", "gpu"), _gpu_message(service.image or base, True))
    for name, job in spec.jobs.items():
        if job.resources.gpu and not cuda_image(base):
            raise RenderRefused(("jobs", name, "resources", "gpu"), _gpu_message(base, False))


def _gpu_message(image: str, service: bool) -> str:
    where = "the service's `image` or kubernetes.base_image" if service else "kubernetes.base_image"
    return (f"requests a GPU, but its image {image!r} has no CUDA (its name says none of "
            f"{', '.join(CUDA_HINTS)}); set {where} to a CUDA image, e.g. "
            "nvcr.io/nvidia/cuda:12.4.1-runtime-ubuntu22.04 with Python 3.11 installed")


def rule_groups(spec: AppSpec, app_dir: Path) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = list(default_rules(spec)["groups"]) if spec.observability.default_rules else []
    for relative in spec.observability.rules:
        path = app_dir / relative
        _, problems = check_rule_file(path, relative)
        if problems:
            raise problems[0]
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=LocatingSafeLoader) or {}
        groups += list(data.get("groups") or [])
    return groups


def render_context(spec: AppSpec, app_dir: Path, image_tag: str) -> RenderContext:
    return RenderContext(spec=spec, image_tag=image_tag, rule_groups=rule_groups(spec, app_dir),
                         dashboard=grafana_dashboard(spec.app))
