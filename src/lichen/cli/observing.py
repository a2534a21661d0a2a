"""CLI verbs: observing — ``lichen rules check|test`` (the metrics engine); silences and dashboards add their own functions below."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lichen.cli.output import console, dashboard_url, err_console, print_json

rules_app = typer.Typer(help="Check and unit-test Prometheus rule files with Lichen's evaluator.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add this module's verbs to the root app."""
    app.add_typer(rules_app, name="rules")
    rules_app.command("check")(rules_check)
    rules_app.command("test")(rules_test)
    register_alerting(app)


# ------------------------------------------------------------------- rules


def rules_check(
    files: Annotated[list[Path], typer.Argument(help="Rule files in Prometheus' format.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Check rule files: YAML shape, PromQL support, durations, label names and templates.

    Checks every file (as promtool does), printing the rules found or every error of each,
    one per line as file:line field: message; exits 2 if any file is invalid.

    Example: lichen rules check rules/app.yml
    """
    from lichen.observe.rule_files import check_rule_file

    report = []
    for path in files:
        groups, problems = check_rule_file(path)
        if problems:
            errors = [str(e) for e in problems]
            report.append({"file": str(path), "valid": False, "error": errors[0], "errors": errors})
            if not as_json:
                lines = "".join(f"\nerror: {e}" for e in errors)
                err_console.print(f"Checking {path}\n  FAILED:{lines}", markup=False, soft_wrap=True)
            continue
        rules = sum(len(g.rules) for g in groups)
        seen: dict[tuple, int] = {}
        for rule in (r for g in groups for r in g.rules):  # promtool's duplicate-rules lint: same name and labels
            key = (rule.name, tuple(sorted(rule.labels.items())))
            seen[key] = seen.get(key, 0) + 1
        duplicates = sorted(name for (name, _labels), count in seen.items() if count > 1)
        report.append({"file": str(path), "groups": len(groups), "rules": rules, "valid": True, "duplicates": duplicates})
        if not as_json:
            console.print(f"Checking {path}\n  SUCCESS: {rules} rules found", markup=False, soft_wrap=True)
            if duplicates:
                err_console.print(
                    f"warning: {len(duplicates)} duplicate rule(s) (same name and labels) in {path}: {', '.join(duplicates)}"
                    " — might cause inconsistency while recording expressions",
                    markup=False,
                    soft_wrap=True,
                )
    if as_json:
        print_json({"files": report})
    if not all(r["valid"] for r in report):
        raise typer.Exit(2)


def rules_test(
    files: Annotated[list[Path], typer.Argument(help="Unit-test files in promtool's format (promtool test rules).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Run promtool-format rule unit tests on Lichen's evaluator; exits 1 if any test fails.

    Example: lichen rules test tests/conformance/rate.yml
    """
    from lichen.errors import LichenError
    from lichen.observe.promtool_tests import TestFileResult, run_test_file

    results = []
    for path in files:  # like promtool, a file that cannot be read or loaded fails and the others still run
        try:
            results.append(run_test_file(path))
        except LichenError as exc:
            results.append(TestFileResult(str(path), [str(exc)]))
    if as_json:
        print_json({"files": [{"file": r.path, "ok": r.ok, "failures": r.failures} for r in results]})
    else:
        for r in results:
            console.print(r.report(), markup=False, highlight=False, soft_wrap=True)
    if not all(r.ok for r in results):
        raise typer.Exit(1)


# ------------------------------------------------- silences and dashboards
# (notifications, silences, dashboard and Grafana export)

silence_app = typer.Typer(help="Mute alert notifications with label matchers for a while.", no_args_is_help=True)
dashboards_app = typer.Typer(help="Export dashboards for other tools.", no_args_is_help=True)
AppDirOption = Annotated[Path, typer.Option("--app-dir", "-C", help="The app directory (holding lichen.yaml).")]


def register_alerting(app: typer.Typer) -> None:
    """``lichen silence add|list|expire``, ``lichen dashboard`` and ``lichen dashboards export``."""
    app.add_typer(silence_app, name="silence")
    silence_app.command("add")(silence_add)
    silence_app.command("list")(silence_list)
    silence_app.command("expire")(silence_expire)
    app.command("dashboard")(dashboard_open)
    app.add_typer(dashboards_app, name="dashboards")
    dashboards_app.command("export")(dashboards_export)


def _app_spec(app_dir: Path):  # noqa: ANN202 - lazy imports keep the CLI fast
    from lichen.spec.loading import load_spec
    from lichen.spec.models import AppSpec

    spec_path = app_dir / "lichen.yaml"
    if spec_path.exists():
        return load_spec(spec_path)
    return AppSpec(app=app_dir.resolve().name.lower() if app_dir.resolve().name else "lichen")


def _silences(app_dir: Path):  # noqa: ANN202
    from lichen.observe.silences import SilenceStore, state_db_path

    spec = _app_spec(app_dir)
    return SilenceStore(state_db_path(spec.state.url, app_dir.resolve()))


def _fmt_time(epoch_s: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(epoch_s).strftime("%Y-%m-%d %H:%M:%S")


def silence_add(
    matchers: Annotated[list[str], typer.Argument(help='Label matchers: NAME=VALUE, NAME!=VALUE, NAME=~REGEX, NAME!~REGEX.')],
    duration: Annotated[str, typer.Option("--duration", "-d", help="How long it lasts (30m, 2h, 1d).")] = "1h",
    comment: Annotated[str, typer.Option("--comment", "-c", help="Why (shown in lists).")] = "",
    author: Annotated[str, typer.Option("--author", "-a", help="Who (default: $USER).")] = "",
    app_dir: AppDirOption = Path("."),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Add a silence: matching alerts send no notifications until it ends.

    Regex matchers are anchored, as in Alertmanager. The running controller
    applies it at its next notification cycle.

    Example: lichen silence add alertname=LichenHighErrorRatio 'service=~api|web' --duration 2h -c "deploy"
    """
    import getpass
    import time

    from lichen.errors import ConfigError
    from lichen.observe.silences import silence_to_dict
    from lichen.spec.quantities import parse_duration_s

    try:
        duration_s = parse_duration_s(duration)
    except ValueError as exc:
        raise ConfigError(f"--duration: {exc}") from None
    if duration_s <= 0:
        raise ConfigError("--duration: must be positive")
    from lichen.runtime.audit_logs import audited
    from lichen.runtime.workspaces import workspace_for

    now = time.time()
    store = _silences(app_dir)
    try:
        with audited(workspace_for(app_dir).root, "silence.add", {"matchers": matchers, "duration": duration,
                                                                  "comment": comment}):
            silence = store.add(matchers, starts_at=now, ends_at=now + duration_s,
                                created_by=author or getpass.getuser(), comment=comment)
    finally:
        store.close()
    if as_json:
        print_json(silence_to_dict(silence, now))
    else:
        console.print(f"silence {silence.id} active until {_fmt_time(silence.ends_at)}")


def silence_list(
    show_all: Annotated[bool, typer.Option("--all", help="Include expired silences.")] = False,
    app_dir: AppDirOption = Path("."),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """List silences that are active or pending (``--all``: expired ones too).

    Example: lichen silence list --json
    """
    import time

    from lichen.cli.output import print_table
    from lichen.observe.silences import silence_to_dict

    now = time.time()
    store = _silences(app_dir)
    try:
        silences = store.list(now, include_expired=show_all)
    finally:
        store.close()
    if as_json:
        print_json({"silences": [silence_to_dict(s, now) for s in silences]})
        return
    if not silences:
        console.print("no silences" + ("" if show_all else " (use --all to include expired ones)"))
        return
    print_table(
        None,
        ["id", "state", "matchers", "starts", "ends", "by", "comment"],
        [
            [s.id[:8], s.state(now), " ".join(str(m) for m in s.matchers), _fmt_time(s.starts_at),
             _fmt_time(s.ends_at), s.created_by, s.comment]
            for s in silences
        ],
    )


def silence_expire(
    silence_id: Annotated[str, typer.Argument(help="The silence id, or an unambiguous prefix of it.")],
    app_dir: AppDirOption = Path("."),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """End a silence now; its alerts notify again at the next group interval.

    Example: lichen silence expire 3f2a9c1e
    """
    import time

    from lichen.observe.silences import silence_to_dict

    from lichen.runtime.audit_logs import audited
    from lichen.runtime.workspaces import workspace_for

    now = time.time()
    store = _silences(app_dir)
    try:
        with audited(workspace_for(app_dir).root, "silence.expire", {"id": silence_id}):
            silence = store.expire(silence_id, now)
    finally:
        store.close()
    if as_json:
        print_json(silence_to_dict(silence, now))
    else:
        console.print(f"silence {silence.id} expired")


def dashboard_open(
    app_dir: AppDirOption = Path("."),
    no_open: Annotated[bool, typer.Option("--no-open", help="Only print the URL.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Open the running controller's live dashboard in a browser (and print its URL).

    The URL carries the API token in its fragment, which browsers never send
    to servers; treat it like the token itself.

    Example: lichen dashboard --no-open
    """
    import webbrowser

    import httpx

    from lichen.errors import ControlPlaneError
    from lichen.runtime.workspaces import read_controller_info, read_token, workspace_for

    workspace = workspace_for(app_dir)
    info = read_controller_info(workspace)
    if not info or "url" not in info:
        raise ControlPlaneError(f"no controller runs for {workspace.app_dir}; start it with 'lichen up'")
    base = info["url"].rstrip("/")
    try:
        page = httpx.get(f"{base}/dashboard/", timeout=5)
    except httpx.HTTPError:
        raise ControlPlaneError(f"the controller at {base} did not answer; is it running? (lichen status)") from None
    if page.status_code != 200:
        raise ControlPlaneError(f"the controller at {base} serves no dashboard (HTTP {page.status_code} for /dashboard/)")
    url = dashboard_url(base, read_token(workspace))
    opened = False
    if not no_open and not as_json:
        try:
            opened = webbrowser.open(url)
        except webbrowser.Error:
            opened = False
    if as_json:
        print_json({"url": url})
    else:
        console.print(url, markup=False, highlight=False, soft_wrap=True)
        if not no_open and not opened:
            console.print("(no browser found: open the URL above)")


def dashboards_export(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write to FILE (atomically) instead of stdout.")] = None,
    app_dir: AppDirOption = Path("."),
) -> None:
    """Write a Grafana dashboard (JSON) using the same queries as Lichen's dashboard.

    Import it in Grafana and choose a Prometheus data source pointing at
    Lichen's query API or at a Prometheus that scrapes Lichen's /federate.

    Example: lichen dashboards export --out grafana-dashboard.json
    """
    import json
    import sys

    from lichen.observe.grafana import grafana_dashboard

    text = json.dumps(grafana_dashboard(_app_spec(app_dir).app), indent=2) + "\n"
    if out is None:
        sys.stdout.write(text)
        return
    from lichen.runtime.workspaces import atomic_write

    atomic_write(out, text)
    console.print(f"wrote {out}")
