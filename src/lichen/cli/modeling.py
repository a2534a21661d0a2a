"""CLI verbs for the model registry: ``lichen models list|promote|rollback|verify``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from lichen.cli.output import console, print_json, print_table
from lichen.errors import ConfigError
from lichen.registry.models import ModelRegistry, ModelVersion, default_registry_root

models_app = typer.Typer(
    name="models",
    help="The model registry: list versions, choose which one serves, roll back.",
    no_args_is_help=True,
)

RegistryOption = Annotated[
    Path | None,
    typer.Option(
        "--registry",
        help="Registry directory (default: $LICHEN_MODEL_REGISTRY, else <app>/.lichen/models).",
    ),
]
AppOption = Annotated[Path, typer.Option("--app", help="App directory whose registry to use.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _registry(registry: Path | None, app_dir: Path) -> ModelRegistry:
    if registry is not None:
        return ModelRegistry(registry)
    base = app_dir.parent if app_dir.is_file() else app_dir
    return ModelRegistry(default_registry_root(base))


def _metrics_text(metrics: dict[str, object]) -> str:
    parts = []
    for key, value in sorted(metrics.items()):
        parts.append(f"{key}={value:.4f}" if isinstance(value, float) else f"{key}={value}")
    return " ".join(parts)


def _row(mv: ModelVersion) -> list[object]:
    return [
        mv.name,
        f"v{mv.version}",
        "●" if mv.promoted else "",
        dt.datetime.fromtimestamp(mv.created_at).strftime("%m-%d %H:%M"),
        (mv.dataset_version or "")[:8],
        _metrics_text(mv.metrics),
    ]


@models_app.command("list")
def list_models(
    name: Annotated[str | None, typer.Argument(help="Only this model's versions.")] = None,
    registry: RegistryOption = None,
    app_dir: AppOption = Path("."),
    as_json: JsonOption = False,
) -> None:
    """List registered model versions; ● marks the promoted (serving) one. `--json` adds params and checksums.

    Example: lichen models list ease --app examples/recsys
    """
    reg = _registry(registry, app_dir)
    versions = reg.list(name)
    if as_json:
        print_json([mv.to_json() for mv in versions])
        return
    print_table(
        f"models in {reg.root}",
        ["model", "version", "serving", "created", "dataset", "metrics"],
        [_row(mv) for mv in versions],
    )


@models_app.command("promote")
def promote_model(
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[str, typer.Argument(help="Version to serve, e.g. 3 or v3.")],
    registry: RegistryOption = None,
    app_dir: AppOption = Path("."),
    as_json: JsonOption = False,
) -> None:
    """Make a version the one that serves; running services pick it up without failing a request.

    Example: lichen models promote ease 3 --app examples/recsys
    """
    reg = _registry(registry, app_dir)
    mv = reg.promote(name, _version_number(version))
    if as_json:
        print_json(mv.to_json())
    else:
        console.print(f"promoted [bold]{mv.name} v{mv.version}[/] ({_metrics_text(mv.metrics)})")


@models_app.command("rollback")
def rollback_model(
    name: Annotated[str, typer.Argument(help="Model name.")],
    registry: RegistryOption = None,
    app_dir: AppOption = Path("."),
    as_json: JsonOption = False,
) -> None:
    """Serve the version that was promoted before the current one again.

    Example: lichen models rollback ease --app examples/recsys
    """
    reg = _registry(registry, app_dir)
    mv = reg.rollback(name)
    if as_json:
        print_json(mv.to_json())
    else:
        console.print(f"rolled back [bold]{mv.name}[/] to v{mv.version}")


@models_app.command("verify")
def verify_model(
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[str, typer.Argument(help="Version, e.g. 3 or v3.")],
    registry: RegistryOption = None,
    app_dir: AppOption = Path("."),
) -> None:
    """Check a version's files against the sha256 recorded at registration.

    Example: lichen models verify ease 3 --app examples/recsys
    """
    reg = _registry(registry, app_dir)
    mv = reg.require_verified(name, _version_number(version))
    console.print(f"{mv.name} v{mv.version}: checksum ok ({mv.checksum[:12]})")


def _version_number(text: str) -> int:
    raw = text[1:] if text.lower().startswith("v") else text
    if not raw.isdigit():
        raise ConfigError(f"version {text!r}: expected a number such as 3 or v3")
    return int(raw)


def register(app: typer.Typer) -> None:
    """Add this module's verbs to the root app."""
    app.add_typer(models_app, name="models")
