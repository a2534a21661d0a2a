"""Revision ids: a content hash of what a replica runs.

A revision covers everything that changes a replica process (entrypoint,
env, secret names, resources, probes, limits, grace...) plus a digest of
the app's code, computed by the runtime and passed in. Replica counts,
autoscaling, routes, SLOs and rollout settings do not make a new revision,
as in a Kubernetes pod template. ``restart_nonce`` forces a new revision
for ``lichen restart``.
"""

from __future__ import annotations

import hashlib
import json

from lichen.spec.models import ServiceSpec

_NOT_IN_REVISION = {"replicas", "autoscale", "routes", "slo", "rollout"}


def revision_id(service: str, spec: ServiceSpec, code_digest: str, restart_nonce: int = 0) -> str:
    template = spec.model_dump(mode="json", exclude=_NOT_IN_REVISION)
    payload = json.dumps(
        {"service": service, "template": template, "code": code_digest, "restart": restart_nonce},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:10]
