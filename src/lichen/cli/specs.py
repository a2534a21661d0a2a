"""CLI verbs: specs (scaffold; verbs are added by the issue that builds them)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's verbs to the root app."""
