"""CLI verbs: ``lichen serve`` runs one replica of a service on uvicorn."""

from __future__ import annotations

from collections.abc import MutableMapping
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add this module's verbs to the root app."""
    app.command("serve")(serve)


def serve(
    target: Annotated[str | None, typer.Argument(
        help="module:Class (a lichen Service), module:app (any ASGI app), or the name of a service of the app's "
             "lichen.yaml (default: env LICHEN_SERVICE).")] = None,
    port: Annotated[
        int | None, typer.Option("--port", "-p", help="TCP port to listen on (default: env LICHEN_PORT, else 8000).")
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Interface to bind.")] = "127.0.0.1",
    app_dir: Annotated[
        Path | None, typer.Option("--app-dir", help="Directory put first on sys.path (default: the current one).")
    ] = None,
    grace_s: Annotated[
        float | None,
        typer.Option("--grace-s", help="Seconds in-flight requests get to finish after SIGTERM "
                     "(default: env LICHEN_GRACE_S, else 30)."),
    ] = None,
    drain_s: Annotated[
        float | None,
        typer.Option("--drain-s", help="After SIGTERM, seconds the replica keeps accepting requests (not ready) "
                     "before it stops listening; at most half of --grace-s (default: env LICHEN_DRAIN_S, else 1)."),
    ] = None,
    log_level: Annotated[
        str, typer.Option("--log-level", help="debug, info, warning or error (JSON logs on stderr).")
    ] = "info",
) -> None:
    """Run one replica of a service: /healthz, /readyz, /metrics, JSON logs, graceful SIGTERM.

    SIGTERM: /readyz turns 503 at once, requests are still served for --drain-s,
    then the listener closes and in-flight requests finish within --grace-s.
    Under lichen up the controller sets these through LICHEN_* variables
    (docs/sdk.md); a flag given here wins over its variable.

    A service's name instead of module:Class serves that service of the app's
    lichen.yaml (in --app-dir) with its spec's timeout, concurrency, grace,
    metrics path, SLO and env as defaults: what a container image runs.

    Example: lichen serve app.services:Recommender --port 8000
    """
    import os

    from lichen.errors import ConfigError
    from lichen.sdk.serving import serve as serve_replica

    target = target or os.environ.get("LICHEN_SERVICE")
    if not target:
        raise ConfigError("give module:Class, module:app or a service name (or set LICHEN_SERVICE)", where="TARGET")
    if ":" not in target:
        target = _service_defaults(target, app_dir or Path.cwd(), os.environ)
    if log_level.lower() not in {"debug", "info", "warning", "error", "critical"}:
        raise ConfigError(f"must be debug, info, warning or error, got {log_level!r}", where="--log-level")
    code = serve_replica(
        target,
        port=port,
        host=host,
        app_dir=app_dir,
        grace_s=grace_s,
        drain_s=drain_s,
        log_level=log_level.lower(),
    )
    raise typer.Exit(code)


def _service_defaults(name: str, app_dir: Path, environ: MutableMapping[str, str]) -> str:
    """The entrypoint of service ``name`` of the app in ``app_dir``; its spec fills every replica setting and
    env variable the environment leaves unset (as ``lichen up`` would set them)."""
    from lichen.errors import ConfigError
    from lichen.sdk.settings import ReplicaSettings
    from lichen.spec.loading import load_spec

    spec_path = app_dir / "lichen.yaml"
    if not spec_path.is_file():
        raise ConfigError(f"{name!r} is not module:Class, and there is no lichen.yaml in {app_dir} to find a "
                          "service of that name in", where="TARGET")
    spec = load_spec(spec_path)
    service = spec.services.get(name)
    if service is None:
        known = ", ".join(sorted(spec.services)) or "none"
        raise ConfigError(f"no service {name!r} in {spec_path} (services: {known})", where="TARGET")
    settings = ReplicaSettings(service=name, grace_s=service.termination_grace_s, timeout_s=service.timeout_s,
                               max_concurrency=service.max_concurrency, metrics_path=service.metrics_path,
                               slo_latency_ms=(service.slo.latency_ms,), app_dir=str(app_dir))
    for key, text in {**settings.to_env(), **service.env}.items():
        environ.setdefault(key, text)
    return service.entrypoint
