"""The ``lichen`` entry point: global options and error handling.

Each verb group lives in its own module and adds itself through
``register(app)``. A :class:`lichen.errors.LichenError` becomes one clear
line on stderr and its exit code; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from lichen import __version__
from lichen.cli import controlling, gateway, inspecting, jobs, keys, models, observing, serving, specs
from lichen.errors import LichenError

app = typer.Typer(
    name="lichen",
    help="Run AI microservices on one machine with production semantics.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

for module in (specs, serving, controlling, inspecting, jobs, models, gateway, keys, observing):
    module.register(app)


def _version(value: bool) -> None:
    if value:
        print(f"lichen {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.", envvar="LICHEN_DEBUG")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Lichen: one spec, production semantics, locally and on Kubernetes."""
    if debug:
        os.environ["LICHEN_DEBUG"] = "1"


def run(argv: list[str] | None = None) -> None:
    """Console-script entry: run the CLI, turning user errors into one line."""
    debug = "--debug" in (argv if argv is not None else sys.argv) or os.environ.get("LICHEN_DEBUG") == "1"
    try:
        # Outside standalone mode click returns typer.Exit's code instead of exiting.
        code = app(args=argv, standalone_mode=False)
    except LichenError as exc:
        if debug:
            raise
        Console(stderr=True, highlight=False, emoji=False).print(
            f"[bold red]error:[/] {escape(str(exc))}", markup=True, soft_wrap=True
        )
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
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
