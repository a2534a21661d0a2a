"""What a replica process is started with: its command line and its environment.

Plain functions of the spec, the placement and the replica contract
(:class:`lichen.sdk.settings.ReplicaSettings`); the controller calls them
when it starts a replica and hands the result to a ``ProcessLauncher``.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from lichen.control.placing import Placement, thread_caps
from lichen.redacting import rules_text
from lichen.runtime.workspaces import gpu_device_list
from lichen.sdk.settings import ReplicaSettings
from lichen.spec.models import AppSpec, ServiceSpec, TracingSpec

CommandBuilder = Callable[[str, ServiceSpec, int, Path], list[str]]


def lichen_serve_command(service: str, spec: ServiceSpec, port: int, app_dir: Path) -> list[str]:
    """``lichen serve ENTRYPOINT --port N --app-dir DIR`` with this interpreter."""
    return [sys.executable, "-c", "from lichen.cli.main import run; run()", "serve", spec.entrypoint,
            "--port", str(port), "--app-dir", str(app_dir)]


def replica_settings(service: str, revision: str, replica_id: str, port: int, spec: ServiceSpec, app_dir: Path,
                     drain_s: float, urls: Mapping[str, Any], *, redact: str = "",
                     redact_salt_file: Path | None = None, tracing: TracingSpec | None = None) -> ReplicaSettings:
    """The replica contract (:mod:`lichen.sdk.settings`) of one replica; the replica parses it back from its env.

    ``redact``: ``observability.redact`` as text (:func:`lichen.redacting.rules_text`); ``redact_salt_file``:
    the app's salt (:func:`lichen.runtime.workspaces.ensure_redact_salt`); ``tracing``: where its spans go.
    The secret *names* the replica
    masks in its output are its own ``secrets``; their values go in through :func:`replica_environment`.
    """
    return ReplicaSettings(
        service=service, replica=replica_id, revision=revision, port=port, app_dir=str(app_dir),
        controller=str(app_dir), grace_s=spec.termination_grace_s, drain_s=drain_s, timeout_s=spec.timeout_s,
        max_concurrency=spec.max_concurrency, metrics_path=spec.metrics_path, slo_latency_ms=(spec.slo.latency_ms,),
        secret_names=tuple(spec.secrets) or None, redact=redact or None,
        redact_salt_file=str(redact_salt_file) if redact_salt_file is not None else None,
        trace_endpoint=tracing.traces_url() if tracing is not None else None,
        trace_sampling_ratio=tracing.sampling_ratio if tracing is not None else 1.0, **urls,
    )


def redact_text(app: AppSpec | None) -> str:
    """``observability.redact`` of ``app`` as the replica contract's text (empty: only the default rules)."""
    return rules_text(app.observability.redact_rules()) if app is not None else ""


def read_at_start_text(app: AppSpec | None) -> str:
    """What else a replica reads once at start and a revision therefore hashes: the redaction rules, and
    ``observability.tracing`` when set (empty when neither is, so a plain app's revisions stay as they were)."""
    tracing = app.observability.tracing if app is not None else None
    trace = f"\0trace:{tracing.model_dump_json()}" if tracing is not None else ""
    return redact_text(app) + trace


def with_redaction(code_digest: str, redact: str) -> str:
    """The digest a revision hashes: the code's, with the redaction rules a replica reads at start when there are
    any, so a change to them rolls every service as code does (no rules: the code's digest as it is)."""
    return hashlib.sha256(f"{code_digest}\0redact:{redact}".encode()).hexdigest()[:16] if redact else code_digest


def replica_environment(inherited: Mapping[str, str], hidden: Collection[str], settings: ReplicaSettings,
                        spec: ServiceSpec, placement: Placement, use_cgroups: bool,
                        secrets: Mapping[str, str]) -> dict[str, str]:
    """The environment of one replica: the controller's own minus ``LICHEN_*`` and secrets it does not
    declare (``hidden``, as in a Kubernetes pod), the replica contract, device and thread limits from its
    placement, then the service's ``env`` and its own ``secrets``."""
    env = {k: v for k, v in inherited.items() if not k.startswith("LICHEN_") and k not in hidden}
    env.update({"PYTHONUNBUFFERED": "1", **settings.to_env(),
                "CUDA_VISIBLE_DEVICES": gpu_device_list(placement.gpu_indices)})
    if placement.memory_bytes is not None and not use_cgroups:
        env.setdefault("MALLOC_ARENA_MAX", "2")
    for name, threads in thread_caps(placement.cpu_cores).items():
        env.setdefault(name, threads)
    env.update(spec.env)
    env.update(secrets)
    return env
