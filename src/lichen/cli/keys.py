"""CLI verbs: ``lichen keys create|list|revoke`` manage the gateway's API keys."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from lichen.cli.output import console, print_json, print_table
from lichen.errors import ConfigError
from lichen.runtime.audit_logs import audited
from lichen.spec.quantities import parse_duration_s

DEFAULT_KEYS_DB = ".lichen/keys.db"

keys_app = typer.Typer(help="Manage the gateway's API keys (stored hashed in SQLite).", no_args_is_help=True)


def _keys_db(db: str | None, config: Path | None) -> Path:
    if db:
        return Path(db)
    if config is not None:
        from lichen.gateway.configs import load_config

        loaded = load_config(config)
        path = Path(loaded.keys_db)
        return path if path.is_absolute() else config.resolve().parent / path
    return Path(DEFAULT_KEYS_DB)


def expiry_from(expires_in: str | None) -> float | None:
    """The wall time an ``--expires-in`` lifetime (30d, 12h) ends, or None for never."""
    if not expires_in:
        return None
    try:
        return time.time() + parse_duration_s(expires_in)
    except ValueError as exc:
        raise ConfigError(str(exc), where="--expires-in") from None


DbOption = Annotated[str | None, typer.Option("--db", help="Key store file (default .lichen/keys.db).")]
ConfigOption = Annotated[Path | None, typer.Option("--config", help="Use the key store this gateway config names.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="A label for the key, e.g. the client's name.")],
    scope: Annotated[list[str] | None, typer.Option("--scope", help="Route prefix the key may call (repeatable); default all.")] = None,
    expires_in: Annotated[str | None, typer.Option("--expires-in", help="Lifetime such as 30d, 12h or 90m; default never.")] = None,
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create an API key; its secret is printed once and only its hash is stored.

    Example: lichen keys create mobile-app --scope /v1/recommend --expires-in 30d
    """
    from lichen.gateway.keys import KeyStore

    expires_at = expiry_from(expires_in)
    path = _keys_db(db, config)
    with audited(path.resolve().parent, "keys.create", {"name": name, "scopes": list(scope or ["*"]),
                                                         "expires_in": expires_in}):
        key, token = KeyStore(path).create(name, list(scope or ["*"]), expires_at)
    if as_json:
        print_json({**key.public(), "token": token})
        return
    console.print(f"created key [bold]{key.id}[/] ({name}), scopes {', '.join(key.scopes)}")
    console.print("token (shown once, store it now):")
    print(token)


@keys_app.command("list")
def keys_list(db: DbOption = None, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """List API keys (never their secrets).

    Example: lichen keys list --json
    """
    from lichen.gateway.keys import KeyStore

    keys = [k.public() for k in KeyStore(_keys_db(db, config)).all().values()]
    if as_json:
        print_json(keys)
        return
    fmt = lambda t: time.strftime("%Y-%m-%d %H:%M", time.gmtime(t)) if t else ""  # noqa: E731
    print_table("API keys", ["id", "name", "scopes", "state", "created (UTC)", "expires (UTC)"],
                [[k["id"], k["name"], ",".join(k["scopes"]), k["state"], fmt(k["created_at"]), fmt(k["expires_at"])] for k in keys])


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id shown by `lichen keys list`.")],
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Revoke an API key; running gateways stop accepting it within a second.

    Example: lichen keys revoke 3f9a1c2e
    """
    from lichen.gateway.keys import KeyStore

    path = _keys_db(db, config)
    with audited(path.resolve().parent, "keys.revoke", {"id": key_id}):
        key = KeyStore(path).revoke(key_id)
    if as_json:
        print_json(key.public())
        return
    console.print(f"revoked key [bold]{key.id}[/] ({key.name})")


def register(app: typer.Typer) -> None:
    """Add this module's verbs to the root app."""
    app.add_typer(keys_app, name="keys")
