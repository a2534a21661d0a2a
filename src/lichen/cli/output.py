"""Printing for CLI verbs: rich for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console, ConsoleDimensions
from rich.table import Table

UNBOUNDED_WIDTH = 100_000
"""the width tables and lines get when output is not a terminal: a pipe or file gets every id and path whole"""


class WholeLinesConsole(Console):
    """A rich console that wraps and shrinks tables to the terminal's width only on a terminal; piped or
    redirected (a script, ``| grep``, CI) it is as wide as its longest line, ignoring ``COLUMNS``, so no id is
    cut to "feedback-dd…" and no path is broken over two lines."""

    _width_set = False

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        if not self._width_set and not self.is_terminal:
            return ConsoleDimensions(UNBOUNDED_WIDTH, size.height)
        return size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size
        self._width_set = True


# No emoji codes: user text such as "app:x:" must print as written, not as an emoji.
console = WholeLinesConsole(highlight=False, emoji=False)
err_console = WholeLinesConsole(stderr=True, highlight=False, emoji=False)


def print_json(data: Any) -> None:
    """One JSON document on stdout (stable key order, no colour)."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def print_table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(title=title, show_lines=False, header_style="bold")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*["" if v is None else str(v) for v in row])
    console.print(table)


def dashboard_url(api_url: str, token: str | None = None) -> str:
    """The dashboard's URL; with ``token``, the token rides in the fragment (``#token=``), which browsers
    never send, so no server, proxy or access log sees it; the page moves it to the tab's sessionStorage
    and drops it from the address bar."""
    return api_url.rstrip("/") + "/dashboard/" + (f"#token={token}" if token else "")


def dashboard_line(api_url: str, token: str | None, private: bool) -> str:
    """What ``lichen up`` prints for the dashboard (pure).

    Only to a private stream -- the user's own terminal -- does the URL carry
    the token, so it opens signed in. Anywhere else (the controller's log,
    a pipe, a file: places others may read, which the 0600 token file does
    not allow) the URL has no token; that page asks for it (``lichen
    dashboard`` opens it signed in, or paste the token from .lichen/token).
    """
    if private and token:
        return f"dashboard {dashboard_url(api_url, token)}"
    return (f"dashboard {dashboard_url(api_url)} (it asks for the token in .lichen/token; "
            "'lichen dashboard' opens it signed in)")


def is_private(stream: Any = None) -> bool:
    """Whether ``stream`` (stdout) is a terminal: seen by the user, not kept in a file others may read."""
    stream = sys.stdout if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
