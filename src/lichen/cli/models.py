"""CLI verbs for the model registry: ``lichen models list|promote|rollback|verify``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rich.table import Table

from lichen.cli.output import console, print_json
from lichen.errors import ConfigError
from lichen.registry.models import ModelRegistry, ModelVersion, default_registry_root
from lichen.runtime.audit_logs import audited
from lichen.runtime.workspaces import workspace_for

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


_PREFERRED = ("test_ndcg", "ndcg", "test_recall", "recall", "valid_ndcg", "auc", "accuracy", "loss")


def _metrics_text(metrics: dict[str, object], limit: int = 3) -> str:
    """The few numeric metrics worth a glance (ranking ones first); `--json` has them all."""
    numeric = {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}

    def rank(key: str) -> tuple[int, str]:
        lowered = key.lower()
        for i, prefix in enumerate(_PREFERRED):
            if lowered.startswith(prefix):
                return i, key
        return len(_PREFERRED), key

    chosen = sorted(numeric, key=rank)[:limit]
    parts = [f"{k}={numeric[k]:.4f}" if isinstance(numeric[k], float) else f"{k}={numeric[k]}" for k in chosen]
    hidden = len(metrics) - len(chosen)
    return "\n".join(parts + ([f"(+{hidden} more)"] if hidden > 0 else []))


def _params_text(params: dict[str, object], limit: int = 3) -> str:
    keys = sorted(params, key=lambda k: (k not in ("model", "kind"), k))  # what it is, first
    lines = [f"{k}={params[k]}" for k in keys[:limit]]
    return "\n".join(lines + ([f"(+{len(keys) - limit} more)"] if len(keys) > limit else []))


def _row(mv: ModelVersion) -> list[object]:
    return [
        mv.name,
        f"v{mv.version} ●" if mv.promoted else f"v{mv.version}",
        (mv.dataset_version or "")[:11],
        _params_text(mv.params),
        _metrics_text(mv.metrics),
    ]


@models_app.command("list")
def list_models(
    name: Annotated[str | None, typer.Argument(help="Only this model's versions.")] = None,
    registry: RegistryOption = None,
    app_dir: AppOption = Path("."),
    as_json: JsonOption = False,
) -> None:
    """List registered model versions; ● marks the promoted (serving) one. `--json` adds every param and metric, created_at, checksums and paths.

    Example: lichen models list ease --app examples/recsys
    """
    reg = _registry(registry, app_dir)
    versions = reg.list(name)
    if as_json:
        print_json([mv.to_json() for mv in versions])
        return
    table = Table(title=f"models in {reg.root}", header_style="bold")
    table.add_column("model", overflow="fold")
    table.add_column("version", no_wrap=True)
    table.add_column("dataset", overflow="fold")
    table.add_column("params", overflow="ellipsis")
    table.add_column("metrics", overflow="ellipsis")
    for mv in versions:
        table.add_row(*[str(v) for v in _row(mv)])
    console.print(table)


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
    with audited(workspace_for(app_dir).root, "models.promote", {"name": name, "version": version}):
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
    with audited(workspace_for(app_dir).root, "models.rollback", {"name": name}):
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
