"""The ``lichen`` entry point: global options and error handling.

Each verb group lives in its own module and adds itself through
``register(app)``. A :class:`lichen.errors.LichenError` becomes one clear
line on stderr and its exit code; ``--debug`` shows the traceback instead.

The verb modules are imported when the app is built, not when this module is
imported: ``lichen serve`` (every replica the controller starts runs
``from lichen.cli.main import run; run()``) builds an app with only its own
verb, so a replica never imports the control plane, the spec models or rich
(``tests/unit/sdk/test_replica_startup.py``).
"""

from __future__ import annotations

import os
import sys
from importlib import import_module
from typing import Annotated, Any

import typer

from lichen import __version__
from lichen.errors import LichenError

VERB_MODULES = ("specs", "serving", "controlling", "rollouts", "inspecting", "energy", "advising", "carbon", "jobs", "models",
                "deploying", "gateway", "keys", "certs", "access", "secrets", "loadtest", "chaos", "observing")
"""``lichen.cli`` modules whose ``register(app)`` adds their verbs, in help order."""
_FAST_VERBS = {"serve": ("serving",), "gateway": ("gateway",)}
"""verbs whose process needs only these modules: the app built for them registers no other verb"""


def _version(value: bool) -> None:
    if value:
        print(f"lichen {__version__}")
        raise typer.Exit()


def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.", envvar="LICHEN_DEBUG")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Lichen: one spec, production semantics, locally and on Kubernetes."""
    if debug:
        os.environ["LICHEN_DEBUG"] = "1"


def build_app(modules: tuple[str, ...] = VERB_MODULES) -> typer.Typer:
    """The typer app with the verbs of ``modules`` (every verb by default)."""
    cli = typer.Typer(
        name="lichen",
        help="Run AI microservices on one machine with production semantics.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode="rich",
    )
    for name in modules:
        import_module(f"lichen.cli.{name}").register(cli)
    cli.callback()(main)
    return cli


def __getattr__(name: str) -> Any:
    if name == "app":  # the whole CLI, built on first use (tests, typer.main.get_command)
        value = globals()["app"] = build_app()
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _app_for(argv: list[str]) -> typer.Typer:
    """The whole app, or a smaller one when the verb is one of :data:`_FAST_VERBS`."""
    verb = next((arg for arg in argv if not arg.startswith("-")), None)
    modules = _FAST_VERBS.get(verb or "")
    if modules is None:
        whole: typer.Typer = globals().get("app") or __getattr__("app")
        return whole
    return build_app(modules)


def _console() -> Any:
    from rich.console import Console  # only when there is an error to print

    return Console(stderr=True, highlight=False, emoji=False)


def run(argv: list[str] | None = None) -> None:
    """Console-script entry: run the CLI, turning user errors into one line."""
    args = argv if argv is not None else sys.argv[1:]
    debug = "--debug" in args or os.environ.get("LICHEN_DEBUG") == "1"
    cli = _app_for(args)
    try:
        # Outside standalone mode click returns typer.Exit's code instead of exiting.
        code = cli(args=argv, standalone_mode=False)
    except LichenError as exc:
        if debug:
            raise
        from rich.markup import escape

        _console().print(f"[bold red]error:[/] {escape(str(exc))}", markup=True, soft_wrap=True)
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        from rich.console import Console

        Console(stderr=True).print("aborted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors carry their own exit code
        # typer may vendor its own click, so recognise usage errors by shape, not class.
        show, exit_code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(exit_code, int) and not debug:
            show()
            sys.exit(exit_code)
        raise
    if isinstance(code, int) and not isinstance(code, bool) and code != 0:
        sys.exit(code)
