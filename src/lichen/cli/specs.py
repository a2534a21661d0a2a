"""CLI verbs for the spec: ``lichen validate`` checks a ``lichen.yaml``; ``lichen init`` scaffolds an app."""

from __future__ import annotations

import json
import keyword
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Sized
from pathlib import Path
from typing import Annotated

import typer

from lichen.cli.output import print_json
from lichen.errors import ConfigError


def register(app: typer.Typer) -> None:
    """Add this module's verbs to the root app."""
    app.command("validate")(validate)
    app.command("init")(init)


# ---------------------------------------------------------------- validate


def validate(
    path: Annotated[
        Path, typer.Argument(help="The spec file, or a directory holding lichen.yaml.", show_default=True)
    ] = Path("lichen.yaml"),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document instead of lines.")] = False,
    no_imports: Annotated[
        bool, typer.Option("--no-imports", help="Skip importing entrypoints and checking rule files.")
    ] = False,
) -> None:
    """Check a lichen.yaml and print every problem as file:line:column field: message.

    Exits 0 when the spec is valid and 2 when it is not. Entrypoints are
    imported (with the spec's directory on sys.path) and the rule files in
    observability.rules are checked as 'lichen rules check' does (their
    problems located in the rule file), and sustainability.region and
    sustainability.intensity_trace are looked up, unless --no-imports.

    Fields the spec designs but Lichen does not act on yet (docs/spec.md,
    "Designed, not built yet") get a located warning; warnings alone exit 0.

    Example: lichen validate examples/recsys/lichen.yaml --json
    """
    from lichen.spec.loading import check_spec
    from lichen.spec.unbuilt_fields import spec_warnings

    if path.is_dir():
        path = path / "lichen.yaml"
    rule_checker = data_checker = None
    if not no_imports:
        from lichen.green.intensity_sources import sustainability_issues as data_checker
        from lichen.observe.rule_files import rule_file_issues as rule_checker
    spec, issues = check_spec(path, check_imports=not no_imports, rule_checker=rule_checker, data_checker=data_checker)
    warnings = spec_warnings(path)
    if not no_imports and spec is not None:
        from lichen.green.intensity_sources import sustainability_warnings

        warnings = [*warnings, *sustainability_warnings(path)]
    if as_json:
        print_json(
            {
                "file": str(path),
                "valid": not issues,
                "issues": [
                    {"file": i.file, "line": i.line, "column": i.column, "field": i.field, "message": i.message,
                     "text": str(i)}
                    for i in issues
                ],
                "warnings": [
                    {"file": w.file, "line": w.line, "column": w.column, "field": w.field, "message": w.message,
                     "text": str(w)}
                    for w in warnings
                ],
                "app": spec.app if spec else None,
                "services": sorted(spec.services) if spec else [],
                "jobs": sorted(spec.jobs) if spec else [],
            }
        )
    elif issues:
        for issue in sorted([*issues, *warnings], key=lambda i: (i.file != str(path), i.file, i.line, i.column)):
            typer.echo(str(issue))
        noun = "problem" if len(issues) == 1 else "problems"
        typer.echo(f"{path}: {len(issues)} {noun}" + (f", {_count(warnings, 'warning')}" if warnings else ""), err=True)
    elif spec is not None:
        for warning in warnings:
            typer.echo(str(warning))
        checked = "" if no_imports else ", entrypoints import" + (", rule files check" if spec.observability.rules else "")
        noted = f" ({_count(warnings, 'warning')})" if warnings else ""
        typer.echo(
            f"{path}: valid: app {spec.app!r}, {_count(spec.services, 'service')}, {_count(spec.jobs, 'job')}{checked}"
            f"{noted}"
        )
    if issues:
        raise typer.Exit(2)


def _count(items: Sized, noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


# -------------------------------------------------------------------- init

_SPEC = """\
# lichen.yaml: the one description of this app. Every field: docs/spec.md in the Lichen repository.
app: {name}

services:
  {name}:
    entrypoint: {package}.service:{cls}
    replicas: 1
    resources: {{cpu: 500m, memory: 256Mi}}
    routes: [/v1/echo]
    timeout_s: 2
    max_concurrency: 16

gateway:
  port: 8080
"""

_SERVICE = '''\
"""The {name} service: one typed endpoint. Run it with

    lichen serve {package}.service:{cls} --app-dir . --port 8000
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from lichen import Service, endpoint


class EchoRequest(BaseModel):
    text: str = Field(min_length=1, max_length=10_000)


class EchoResponse(BaseModel):
    text: str
    length: int


class {cls}(Service):
    def setup(self) -> None:
        # Runs once per replica before it reports ready: load models here.
        self.prefix = ""

    @endpoint("/v1/echo", method="POST", timeout_s=2, max_concurrency=16)
    def echo(self, req: EchoRequest) -> EchoResponse:
        text = self.prefix + req.text
        return EchoResponse(text=text, length=len(text))
'''

_TEST = '''\
"""Tests for the {name} service: run them with `python -m pytest` in this directory."""

from __future__ import annotations

import pydantic
import pytest

from {package}.service import {cls}, EchoRequest, EchoResponse


@pytest.fixture()
def service() -> {cls}:
    svc = {cls}()
    svc.setup()
    return svc


def test_echo_returns_the_text_and_its_length(service: {cls}) -> None:
    assert service.echo(EchoRequest(text="hello")) == EchoResponse(text="hello", length=5)


def test_empty_text_is_rejected() -> None:
    with pytest.raises(pydantic.ValidationError):
        EchoRequest(text="")
'''

_PYPROJECT = """\
[tool.pytest.ini_options]
pythonpath = ["."]
testpaths = ["tests"]
"""

_GITIGNORE = """\
.lichen/
__pycache__/
.pytest_cache/
"""

_RESERVED = {"lichen", "tests", "test", "service", "conftest", "setup"}


def _derive_name(directory: Path, name: str | None) -> str:
    from lichen.spec.models import NAME_PATTERN

    if name is not None:
        if not re.fullmatch(NAME_PATTERN, name) or len(name) > 63:
            raise ConfigError(
                f"must be a lowercase name of letters, digits and '-' that starts with a letter, got {name!r}",
                where="--name",
            )
        return name
    base = directory.resolve().name.lower()
    derived = re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", base)).strip("-")[:63].strip("-")
    if not re.fullmatch(NAME_PATTERN, derived):
        raise ConfigError(f"cannot derive an app name from the directory name {base!r}; pass --name NAME")
    return derived


def _check_package(package: str) -> None:
    if keyword.iskeyword(package) or package in sys.stdlib_module_names or package in _RESERVED:
        raise ConfigError(
            f"the package {package!r} would clash with Python or Lichen's own modules; pass another --name"
        )


def _scaffold_files(name: str) -> dict[str, str]:
    package = name.replace("-", "_")
    cls = "".join(part.capitalize() for part in name.split("-"))
    values = {"name": name, "package": package, "cls": cls}
    return {
        "lichen.yaml": _SPEC.format(**values),
        f"{package}/__init__.py": f'"""The {name} app, scaffolded by `lichen init`."""\n',
        f"{package}/service.py": _SERVICE.format(**values),
        "tests/test_service.py": _TEST.format(**values),
        "pyproject.toml": _PYPROJECT,
        ".gitignore": _GITIGNORE,
    }


def _write_all(directory: Path, files: dict[str, str]) -> None:
    """Write every file or none: stage them in a temporary directory, then move them into place."""
    try:
        if directory.exists():
            staging = Path(tempfile.mkdtemp(prefix=".lichen-init-", dir=directory))
        else:
            parent = directory.resolve().parent
            parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{directory.name or 'app'}.", dir=parent))
    except OSError as exc:
        raise ConfigError(f"cannot create {directory}: {exc.strerror}") from None
    try:
        for relative, text in files.items():
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
        if directory.exists():
            for entry in list(staging.iterdir()):
                os.replace(entry, directory / entry.name)
            staging.rmdir()
        else:
            os.replace(staging, directory)
    except OSError as exc:
        raise ConfigError(f"cannot write {directory}: {exc.strerror or exc}") from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def init(
    directory: Annotated[Path, typer.Argument(help="Where to create the app; must be new or empty.")] = Path("."),
    name: Annotated[
        str | None, typer.Option("--name", help="App name (default: the directory's name, lowercased).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the created files as JSON.")] = False,
) -> None:
    """Scaffold a working app: lichen.yaml, a package with one service, and a pytest test.

    Example: lichen init hello && lichen validate hello/lichen.yaml
    """
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{directory} exists and is not a directory")
    if directory.is_dir() and any(directory.iterdir()):
        raise ConfigError(f"{directory} is not empty; lichen init only writes into a new or empty directory")
    app_name = _derive_name(directory, name)
    package = app_name.replace("-", "_")
    _check_package(package)
    files = _scaffold_files(app_name)
    _write_all(directory, files)
    cls = "".join(part.capitalize() for part in app_name.split("-"))
    entrypoint = f"{package}.service:{cls}"
    shown = str(directory)
    if as_json:
        print_json({"dir": shown, "app": app_name, "entrypoint": entrypoint, "files": sorted(files)})
        return
    body = json.dumps({"text": "hi"})
    typer.echo(f"Created app {app_name!r} in {shown}/:")
    for relative in sorted(files):
        typer.echo(f"  {relative}")
    typer.echo("Next:")
    typer.echo(f"  lichen validate {shown}/lichen.yaml")
    typer.echo(f"  lichen serve {entrypoint} --app-dir {shown} --port 8000")
    typer.echo(f"  curl -s -XPOST localhost:8000/v1/echo -H 'content-type: application/json' -d '{body}'")
    typer.echo(f"  (cd {shown} && python -m pytest -q)")
