"""CLI verbs: observing — ``lichen rules check|test`` (the metrics engine); silences and dashboards add their own functions below."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lichen.cli.output import console, print_json

rules_app = typer.Typer(help="Check and unit-test Prometheus rule files with Lichen's evaluator.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add this module's verbs to the root app."""
    app.add_typer(rules_app, name="rules")
    rules_app.command("check")(rules_check)
    rules_app.command("test")(rules_test)


# ------------------------------------------------------------------- rules


def rules_check(
    files: Annotated[list[Path], typer.Argument(help="Rule files in Prometheus' format.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Check rule files: YAML shape, PromQL support, durations, label names and templates.

    Prints the rules found per file; exits 2 on the first invalid file.

    Example: lichen rules check rules/app.yml
    """
    from lichen.observe.rules import load_rule_file

    report = []
    for path in files:
        groups = load_rule_file(path)
        rules = sum(len(g.rules) for g in groups)
        report.append({"file": str(path), "groups": len(groups), "rules": rules, "valid": True})
        if not as_json:
            console.print(f"Checking {path}\n  SUCCESS: {rules} rules found")
    if as_json:
        print_json({"files": report})


def rules_test(
    files: Annotated[list[Path], typer.Argument(help="Unit-test files in promtool's format (promtool test rules).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Run promtool-format rule unit tests on Lichen's evaluator; exits 1 if any test fails.

    Example: lichen rules test tests/conformance/rate.yml
    """
    from lichen.observe.promtool_tests import run_test_file

    results = [run_test_file(path) for path in files]
    if as_json:
        print_json({"files": [{"file": r.path, "ok": r.ok, "failures": r.failures} for r in results]})
    else:
        for r in results:
            console.print(r.report(), markup=False, highlight=False)
    if not all(r.ok for r in results):
        raise typer.Exit(1)
