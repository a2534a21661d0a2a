"""CLI verbs: ``lichen serve`` runs one replica of a service on uvicorn."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add this module's verbs to the root app."""
    app.command("serve")(serve)


def serve(
    target: Annotated[str, typer.Argument(help="module:Class (a lichen Service) or module:app (any ASGI app).")],
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

    Example: lichen serve app.services:Recommender --port 8000
    """
    from lichen.errors import ConfigError
    from lichen.sdk.serving import serve as serve_replica

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
