"""Printing for CLI verbs: rich for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

# No emoji codes: user text such as "app:x:" must print as written, not as an emoji.
console = Console(highlight=False, emoji=False)
err_console = Console(stderr=True, highlight=False, emoji=False)


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
