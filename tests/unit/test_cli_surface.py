"""Every CLI verb explains itself: ``--help`` with an example, and ``--json``
on the verbs whose output a script would read."""

from __future__ import annotations

from typing import Any
import typer.main

from lichen.cli.main import app

# Verbs that print data a script would read; each must offer --json.
READ_VERBS = {
    "validate", "status", "events", "runs", "models list", "keys list", "keys create",
    "silence list", "silence add", "rules check", "rules test", "init", "scale", "restart", "slo", "certs dev",
}


def _walk(command: Any, prefix: str = "") -> list[tuple[str, Any]]:
    found = []
    if hasattr(command, "commands"):  # typer bundles its own click, so duck-type groups
        for name, sub in sorted(command.commands.items()):
            found += _walk(sub, f"{prefix} {name}".strip())
    else:
        found.append((prefix, command))
    return found


VERBS = _walk(typer.main.get_command(app))


def test_the_cli_has_the_documented_verbs() -> None:
    names = {name for name, _ in VERBS}
    for verb in ("serve", "validate", "init", "up", "down", "status", "scale", "restart", "logs", "events",
                 "run", "runs", "gateway", "keys create", "rules test", "silence add", "dashboard", "slo"):
        assert verb in names, f"missing verb: lichen {verb}"


def test_every_verb_has_help_with_an_example() -> None:
    missing = [name for name, cmd in VERBS if "Example" not in (cmd.help or "")]
    assert not missing, f"verbs whose --help has no 'Example': {missing}"


def test_read_verbs_offer_json() -> None:
    names = dict(VERBS)
    missing = [verb for verb in sorted(READ_VERBS) if verb in names
               and not any("--json" in p.opts for p in names[verb].params)]
    assert not missing, f"verbs without --json: {missing}"
