"""CLI verb: ``lichen gateway`` runs the HTTP gateway (its API keys are ``lichen keys``, in :mod:`lichen.cli.keys`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add this module's verbs to the root app."""
    app.command("gateway")(gateway)


def gateway(
    config: Annotated[Path, typer.Option("--config", "-c", help="Gateway config file (JSON or YAML).")],
) -> None:
    """Run the HTTP gateway from a config file; it reloads when the file changes.

    Example: lichen gateway --config .lichen/gateway.json
    """
    from lichen.gateway.running import run_gateway

    run_gateway(config)
