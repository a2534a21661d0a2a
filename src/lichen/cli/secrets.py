"""CLI verbs: ``lichen secrets set|list|rm|rotate-key|import`` manage the app's encrypted secret store.

Values live Fernet-encrypted in ``.lichen/secrets.enc`` (:mod:`lichen.runtime.secret_stores`); a value is
read from a file, stdin or a prompt without echo, never printed, and never recorded (the audit log gets the
name only). A replica or job looks a declared secret up in the controller's environment, then the store,
then the legacy plaintext ``.lichen/secrets.env``.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from lichen.cli.output import console, err_console, print_json, print_table
from lichen.errors import ConfigError, LichenError

secrets_app = typer.Typer(help="Manage the app's secrets, encrypted at rest in .lichen/secrets.enc.",
                          no_args_is_help=True)

AppDir = Annotated[Path, typer.Option("--app-dir", "-C", help="The app directory (holding lichen.yaml).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _workspace(app_dir: Path) -> Any:
    from lichen.runtime.workspaces import Workspace

    return Workspace(app_dir.resolve())


def _audited(workspace: Any, action: str, params: Mapping[str, Any]) -> Any:
    from lichen.runtime.audit_logs import audited

    return audited(workspace.root, action, params)


def _checked_name(name: str) -> str:
    if not _ENV_NAME.match(name):
        raise ConfigError(f"must be an environment variable name (letters, digits, _; not starting with a digit), "
                          f"got {name!r}", where="NAME")
    return name


def declarations(spec: Any) -> dict[str, list[str]]:
    """Each secret name the spec declares and the fields that declare it (``services.web.secrets``)."""
    found: dict[str, list[str]] = {}
    for name, service in spec.services.items():
        for secret in service.secrets:
            found.setdefault(secret, []).append(f"services.{name}")
    for name, job in spec.jobs.items():
        for secret in job.secrets:
            found.setdefault(secret, []).append(f"jobs.{name}")
    jwt = spec.gateway.auth.jwt
    if jwt is not None and jwt.secret_env:
        found.setdefault(jwt.secret_env, []).append("gateway.auth.jwt")
    return found


def _declared(workspace: Any) -> dict[str, list[str]] | None:
    """The spec's declarations, or None (with a warning) when there is no readable lichen.yaml."""
    if not workspace.spec_path.exists():
        return None
    from lichen.spec.loading import load_spec

    try:
        return declarations(load_spec(workspace.spec_path))
    except LichenError as exc:
        err_console.print(f"warning: cannot read which services declare secrets: {exc}", markup=False)
        return None


def _read_value(name: str, value_file: Path | None, value: str | None) -> str:
    if value_file is not None and value is not None:
        raise ConfigError("give --value-file or --value, not both", where="--value")
    if value is not None:
        err_console.print("warning: --value puts the secret in your shell history and the process list; prefer "
                          "--value-file, stdin or the prompt", markup=False)
        text = value
    elif value_file is not None:
        try:
            text = sys.stdin.read() if str(value_file) == "-" else value_file.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read: {exc.strerror}", where=str(value_file)) from None
        text = text.removesuffix("\n").removesuffix("\r")
    elif sys.stdin.isatty():
        text = typer.prompt(f"value of {name}", hide_input=True, confirmation_prompt=True)
    else:
        text = sys.stdin.read().removesuffix("\n").removesuffix("\r")
    if not text:
        raise ConfigError("is empty: a secret needs a value", where=f"value of {name}")
    if "\0" in text:
        raise ConfigError("holds a NUL character, which no environment variable can carry", where=f"value of {name}")
    return text


def _when(seconds: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds)) if seconds else ""


@secrets_app.command("set")
def secrets_set(
    name: Annotated[str, typer.Argument(help="The secret's name: the environment variable its services read.")],
    value_file: Annotated[Path | None, typer.Option("--value-file", help="Read the value from this file ('-': "
                                                                           "stdin); one trailing newline is "
                                                                           "dropped.")] = None,
    value: Annotated[str | None, typer.Option("--value", help="The value itself (discouraged: it lands in shell "
                                                              "history).")] = None,
    app_dir: AppDir = Path("."),
    as_json: JsonOption = False,
) -> None:
    """Store a secret, encrypted; the value comes from --value-file, stdin, or a prompt without echo.

    The first set creates the key, .lichen/secrets.key (mode 0600), unless LICHEN_SECRETS_KEY holds one.
    Replicas started afterwards get the new value (lichen restart SERVICE for running ones).

    Example: lichen secrets set API_TOKEN --value-file token.txt
    """
    _checked_name(name)
    workspace = _workspace(app_dir)
    text = _read_value(name, value_file, value)
    store = workspace.secret_store()
    with _audited(workspace, "secrets.set", {"name": name}):
        store.set(name, text, time.time())
    declared = _declared(workspace)
    if as_json:
        print_json({"name": name, "stored": True, "file": str(store.path),
                    "declared_by": (declared or {}).get(name, [])})
        return
    console.print(f"stored [bold]{name}[/] encrypted in {store.path} (key: {store.key_source()})")
    if declared is not None and name not in declared:
        err_console.print(f"warning: no service or job in {workspace.spec_path} declares {name} (add it to their "
                          f"secrets: list)", markup=False)


@secrets_app.command("list")
def secrets_list(app_dir: AppDir = Path("."), as_json: JsonOption = False) -> None:
    """List secret names, when each was set, where a replica would get it, and who declares it; never values.

    Where: env (this shell's environment, as the controller's would be), store (secrets.enc), secrets.env
    (the legacy plaintext file) or missing, in the order Lichen looks.

    Example: lichen secrets list --json
    """
    from lichen.runtime.workspaces import read_secrets_file

    workspace = _workspace(app_dir)
    stored = workspace.secret_store().entries()
    legacy = read_secrets_file(workspace.secrets_file)
    declared = _declared(workspace) or {}
    rows = []
    for name in sorted(set(stored) | set(declared) | set(legacy)):
        sources = [source for source, holds in (("env", name in os.environ), ("store", name in stored),
                                                 ("secrets.env", name in legacy)) if holds]
        rows.append({"name": name, "set_at": stored.get(name), "source": sources[0] if sources else "missing",
                     "sources": sources, "declared_by": declared.get(name, [])})
    if as_json:
        print_json(rows)
        return
    print_table("secrets", ["name", "set (UTC)", "from", "declared by"],
                [[r["name"], _when(r["set_at"]), r["source"] + (f" (also {', '.join(r['sources'][1:])})"
                                                                if len(r["sources"]) > 1 else ""),
                  ", ".join(r["declared_by"]) or "-"] for r in rows])
    if legacy:
        err_console.print(f"warning: {workspace.secrets_file} holds plaintext secrets; move them into the store: "
                          f"lichen secrets import {workspace.secrets_file}", markup=False)


@secrets_app.command("rm")
def secrets_rm(
    name: Annotated[str, typer.Argument(help="The secret to remove from the store.")],
    app_dir: AppDir = Path("."),
    as_json: JsonOption = False,
) -> None:
    """Remove a secret from the store (a service that declares it then fails to start until it is set again).

    Example: lichen secrets rm OLD_TOKEN
    """
    workspace = _workspace(app_dir)
    store = workspace.secret_store()
    with _audited(workspace, "secrets.rm", {"name": name}):
        if not store.remove(name):
            raise ConfigError(f"{name} is not in the store (lichen secrets list shows what is)", where=str(store.path))
    if as_json:
        print_json({"name": name, "removed": True})
        return
    console.print(f"removed [bold]{name}[/] from {store.path}")


@secrets_app.command("rotate-key")
def secrets_rotate_key(app_dir: AppDir = Path("."), as_json: JsonOption = False) -> None:
    """Re-encrypt every secret with a new key, atomically: a crash leaves the old or the new key working.

    With the key in .lichen/secrets.key a new key replaces it. With LICHEN_SECRETS_KEY, give the new key in
    LICHEN_SECRETS_NEW_KEY for this command, then make it LICHEN_SECRETS_KEY.

    Example: lichen secrets rotate-key
    """
    workspace = _workspace(app_dir)
    store = workspace.secret_store()
    with _audited(workspace, "secrets.rotate_key", {}):
        old_id, new_id = store.rotate_key()
    count = len(store.entries())
    if as_json:
        print_json({"old_key_id": old_id, "new_key_id": new_id, "secrets": count, "file": str(store.path)})
        return
    console.print(f"re-encrypted {count} secret(s): key id {old_id} -> {new_id} ({store.key_source()})")
    if os.environ.get("LICHEN_SECRETS_KEY"):
        console.print("now set LICHEN_SECRETS_KEY to the value of LICHEN_SECRETS_NEW_KEY")


@secrets_app.command("import")
def secrets_import(
    file: Annotated[Path, typer.Argument(help="A NAME=VALUE file, such as the legacy .lichen/secrets.env.")],
    remove_file: Annotated[bool, typer.Option("--remove-file", help="Delete FILE once every value is "
                                                                    "stored.")] = False,
    app_dir: AppDir = Path("."),
    as_json: JsonOption = False,
) -> None:
    """Move NAME=VALUE lines (export, # comments and quotes allowed) into the encrypted store.

    Example: lichen secrets import .lichen/secrets.env --remove-file
    """
    from lichen.runtime.workspaces import read_secrets_file

    if not file.is_file():
        raise ConfigError("no such file", where=str(file))
    values = read_secrets_file(file)
    for name in values:
        if not _ENV_NAME.match(name):
            raise ConfigError(f"{name!r} is not an environment variable name", where=str(file))
    workspace = _workspace(app_dir)
    store = workspace.secret_store()
    with _audited(workspace, "secrets.import", {"names": sorted(values), "file": str(file)}):
        if values:
            store.set_many(values, time.time())
        if remove_file:
            file.unlink()
    if as_json:
        print_json({"imported": sorted(values), "file": str(file), "removed_file": remove_file})
        return
    console.print(f"imported {len(values)} secret(s) into {store.path}: {', '.join(sorted(values)) or '-'}")
    if not remove_file:
        console.print(f"delete {file} now: Lichen still reads it after the store", markup=False)


def register(app: typer.Typer) -> None:
    """Add this module's verbs to the root app."""
    app.add_typer(secrets_app, name="secrets")
