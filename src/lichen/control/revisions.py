"""Revision ids: a content hash of what a replica runs.

A revision covers everything that changes a replica process (entrypoint,
env, secret names, resources, probes, limits, grace, where it serves metrics,
the SLO latency threshold its histogram has a bucket for) plus a digest of
the service's own code (the files of its entrypoint's import closure,
:mod:`lichen.control.import_closures`), computed by the runtime and passed in. What a running
replica never sees makes no new revision, as with a Kubernetes pod template:
replica counts, autoscaling, routes and the gateway's ``max_inflight``,
the availability and latency targets of the SLO, rollout and restart
settings and ``depends_on`` (the controller applies those live), and ``image`` (used only when
rendering Kubernetes manifests). ``restart_nonce`` forces a new revision for
``lichen restart``.
"""

from __future__ import annotations

import hashlib
import json

from lichen.spec.models import ServiceSpec

_NOT_IN_REVISION = {"replicas", "autoscale", "routes", "max_inflight", "slo", "rollout", "restart", "image",
                    "depends_on"}


def revision_id(service: str, spec: ServiceSpec, code_digest: str, restart_nonce: int = 0) -> str:
    template = spec.model_dump(mode="json", exclude=_NOT_IN_REVISION)
    template["slo_latency_ms"] = spec.slo.latency_ms  # the replica's histogram has a bucket there
    payload = json.dumps(
        {"service": service, "template": template, "code": code_digest, "restart": restart_nonce},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:10]
