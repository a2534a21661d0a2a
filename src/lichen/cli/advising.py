"""CLI verb: ``lichen advise`` — right-size services from what they used, and write it into ``lichen.yaml``."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any

import typer

from lichen.cli.controlling import AppDir, _client, _workspace
from lichen.cli.energy import check_service_option, window_option_s
from lichen.cli.output import console, print_json, print_table
from lichen.errors import ConfigError
from lichen.spec.quantities import format_duration


def _shown(value: Any) -> str:
    return "(unset)" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _signed(value: float | None, unit: str, digits: int = 3) -> str:
    return "unknown" if value is None else f"{value:+.{digits}g} {unit}"


def planned_changes(report: dict[str, Any]) -> list[tuple[tuple[str, ...], Any]]:
    """Each recommended change as ``(key path in lichen.yaml, value)``, in the report's order."""
    return [(("services", row["service"], *change["field"].split(".")), change["recommended"])
            for row in report["services"] for change in row["changes"]]


def _same(field: str, in_file: Any, running: Any) -> bool:
    """Whether the file's value of ``field`` is the one the running app was advised on (units normalised); a
    field the file leaves out is the running default, not an edit."""
    from lichen.spec.quantities import parse_cpu_cores, parse_memory_bytes

    if in_file is None:
        return True
    if running is None:
        return False
    parse = parse_memory_bytes if field.endswith("memory") else parse_cpu_cores if field.endswith("cpu") else float
    try:
        return bool(abs(parse(in_file) - parse(running)) < 1e-9)
    except (TypeError, ValueError):
        return False


def stale_changes(text: str, report: dict[str, Any]) -> list[str]:
    """Each advised field whose value in ``text`` is no longer the one the running app was advised on."""
    import yaml

    from lichen.spec.documents import LocatingSafeLoader

    data = yaml.load(text, Loader=LocatingSafeLoader)
    services = data.get("services") if isinstance(data, dict) else None
    stale = []
    for row in report["services"]:
        for change in row["changes"]:
            node: Any = services.get(row["service"]) if isinstance(services, dict) else None
            for key in change["field"].split("."):
                node = node.get(key) if isinstance(node, dict) else None
            if not _same(change["field"], node, change["current"]):
                stale.append(f"services.{row['service']}.{change['field']} is {node!r} in the file, "
                             f"{change['current']!r} in the running app")
    return stale


def rewrite(spec_path: Path, changes: list[tuple[tuple[str, ...], Any]],
            report: dict[str, Any] | None = None) -> tuple[str, str]:
    """The spec's text now and with ``changes`` (comments and layout kept); refuses a result that would not
    validate, or (with ``report``) a file changed since the running app read it, naming why."""
    from lichen.green.intensity_sources import sustainability_issues
    from lichen.observe.rule_files import rule_file_issues
    from lichen.runtime.workspaces import atomic_write
    from lichen.spec.editing import EditError, set_values
    from lichen.spec.loading import check_spec

    try:
        before = spec_path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read it: {exc}", where=str(spec_path)) from None
    stale = stale_changes(before, report) if report is not None else []
    if stale:
        raise ConfigError("lichen.yaml changed since the running app applied it, so nothing was written ("
                          + "; ".join(stale) + "): run 'lichen up', then 'lichen advise' again", where=str(spec_path))
    try:
        after = set_values(before, changes)
    except EditError as exc:
        raise ConfigError(str(exc), where=str(spec_path)) from None
    trial = spec_path.with_name(f".{spec_path.name}.advise")
    try:
        atomic_write(trial, after)
    except OSError as exc:
        raise ConfigError(f"cannot write next to it: {exc}", where=str(spec_path)) from None
    try:
        spec, issues = check_spec(trial, check_imports=False, rule_checker=rule_file_issues,
                                  data_checker=sustainability_issues)
    finally:
        trial.unlink(missing_ok=True)
    if spec is None:
        problems = "; ".join(str(issue).replace(str(trial), str(spec_path)) for issue in issues)
        raise ConfigError(f"the advised spec would not validate, so nothing was written: {problems}",
                          where=str(spec_path))
    return before, after


def advise(
    window: Annotated[str, typer.Option("--window", "-w", help="How far back to look, e.g. 1h, 6h, 7d.")] = "6h",
    service: Annotated[str | None, typer.Option("--service", "-s", help="Only this service.")] = None,
    apply: Annotated[bool, typer.Option("--apply", help="Write the changes into lichen.yaml (comments and "
                                                        "layout kept) and print the diff.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    app_dir: AppDir = Path("."),
) -> None:
    """Recommend resources, replicas and autoscale settings per service from what it used, as the VPA does.

    CPU: the p95 of each replica's use + 15 %; memory: the peak + 15 % (of what the limit counts here);
    replicas: enough that in-flight requests stay at 70 % of max_concurrency, never below 2 where you run 2.
    Each change shows its reason, and the expected energy and carbon change. Read from the embedded
    Prometheus: a window covers only what was scraped (observability.retention, 6 h by default), so advise
    after the app has seen its real load. --apply writes every change as one diff, never a spec that fails
    lichen validate; the running app changes on the next 'lichen up'.

    Example: lichen advise --window 6h --apply
    """
    window_s = window_option_s(window, 60, "1m")
    spec_path = _workspace(app_dir).spec_path.resolve()  # a symlinked lichen.yaml: write the file it points to
    check_service_option(spec_path, service)
    with _client(app_dir) as client:
        report = client.advice(window_s, service)
    changes = planned_changes(report)
    diff = ""
    if apply and changes:
        from lichen.runtime.workspaces import atomic_write

        before, after = rewrite(spec_path, changes, report)
        diff = "".join(difflib.unified_diff(before.splitlines(True), after.splitlines(True),
                                            f"a/{spec_path.name}", f"b/{spec_path.name}"))
        try:
            atomic_write(spec_path, after, spec_path.stat().st_mode & 0o777)
        except OSError as exc:
            raise ConfigError(f"cannot write it, so it is unchanged: {exc}", where=str(spec_path)) from None
    if as_json:
        print_json({**report, "applied": bool(apply and changes), "diff": diff})
        return
    _print(report)
    if apply and changes:
        console.print(diff, markup=False, end="")
        console.print(f"wrote {len(changes)} change(s) to {spec_path}; 'lichen up' applies them", markup=False)
    elif changes:
        console.print("lichen advise --apply writes these into lichen.yaml", markup=False)
    else:
        console.print("nothing to change", markup=False)


def _print(report: dict[str, Any]) -> None:
    rows = []
    for row in report["services"]:
        if row["skipped"]:
            rows.append([row["service"], "-", "", "", row["skipped"]])
        for change in row["changes"]:
            rows.append([row["service"], change["field"], _shown(change["current"]),
                         _shown(change["recommended"]), change["reason"]])
    covered, asked = report.get("covered_s") or report["window_s"], report["window_s"]
    span = format_duration(round(covered)) + (f" (of the {format_duration(asked)} asked)" if covered < asked - 1 else "")
    if rows:
        print_table(f"advice from {span} of usage (memory: {report['memory_basis']})",
                    ["service", "field", "now", "advised", "why"], rows)
    for row in report["services"]:
        for note in row["notes"]:
            console.print(f"{row['service']}: {note}", markup=False)
    total = report["total"]
    console.print(f"expected change: energy {_signed(total['energy_kwh_per_day'], 'kWh/day')}, operational carbon "
                  f"{_signed(total['carbon_g_per_day'], 'g/day')}, embodied share "
                  f"{_signed(total['embodied_g_per_day'], 'g/day')}", markup=False)


def register(app: typer.Typer) -> None:
    """Add this module's verbs to the root app."""
    app.command("advise")(advise)
