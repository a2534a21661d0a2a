"""CLI verbs that read a running app without changing it: status, logs, events and slo."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from lichen.cli.controlling import AppDir, _client, _running_client, _workspace
from lichen.cli.output import console, err_console, print_json
from lichen.errors import ConfigError, ControlPlaneError


def register(app: typer.Typer) -> None:
    """Add this module's verbs to the root app."""
    app.command("status")(status)
    app.command("logs")(logs)
    app.command("events")(events)
    app.command("slo")(slo)


# ---------------------------------------------------------------- status


def _fmt_s(value: float | None) -> str:
    if value is None:
        return ""
    from lichen.spec.quantities import format_duration

    return format_duration(round(value) if value >= 1 else value)


def service_rows(name: str, s: dict[str, Any]) -> list[list[str]]:
    """The rows of one service in the status table (pure): the current revision with its own ready count
    over the desired count, then, while a rollout still runs older replicas, one row per older revision
    ("old: 2 ready of 2"), as ``kubectl get rs`` shows a Deployment's ReplicaSets."""
    rollout = s.get("rollout") or {}
    text = rollout.get("status", "")
    if rollout.get("reason"):
        text += f": {rollout['reason']}"
    for condition in s.get("conditions") or []:
        if condition["kind"] == "PlacementRefused":  # crash loops show per replica below
            text += ("; " if text else "") + f"{condition['kind']}: {condition['message']}"
    canary = s.get("canary")
    if canary:  # a canary in progress: its weight beside the stable revision
        text += ("; " if text else "") + (f"canary {canary['weight']}% beside {canary['stable']}"
                                          + (" (paused)" if canary.get("paused") else ""))
    if s.get("autoscale"):  # the autoscaler's last decision, with its reason
        text += ("; " if text else "") + ("panic: " if s["autoscale"].get("panic") else "") + \
            s["autoscale"].get("reason", "")
    revisions = s.get("revisions") or [{"revision": s["revision"], "current": True, "ready": s["ready"]}]
    current = next(r for r in revisions if r["current"])
    wanted = canary["replicas"] if canary else s["desired"]  # a canary runs its share; the stable set keeps all
    rows = [[name, s["revision"], f"{current['ready']}/{wanted}", text]]
    for old in (r for r in revisions if not r["current"]):
        rows.append(["", old["revision"], f"old: {old['ready']} ready of {old['replicas']}", ""])
    return rows


def status_view(state: dict[str, Any]) -> Any:
    """The status tables (services, replicas, gateway) that ``lichen status`` prints and ``lichen up`` keeps live."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    title = Text(f"lichen — {state['app_dir']}", style="italic")  # not the table's title: that wraps at its width
    services = Table(header_style="bold")
    for column in ("service", "revision", "ready", "rollout"):
        services.add_column(column, no_wrap=column != "rollout")
    for name, s in sorted(state["services"].items()):
        for row in service_rows(name, s):
            services.add_row(*row)
    replicas = Table(header_style="bold")
    for column in ("replica", "state", "pid", "port", "restarts", "last exit", "uptime", "restart in"):
        replicas.add_column(column, no_wrap=column in ("replica", "state"))
    styles = {"Ready": "green", "CrashLoopBackOff": "red", "Exited": "red", "Terminating": "yellow"}
    for r in state["replicas"]:
        last = ""
        if r["last_exit_reason"]:
            code = "" if r["last_exit_code"] is None else f" ({r['last_exit_code']})"
            last = f"{r['last_exit_reason']}{code}"
        replicas.add_row(r["id"], f"[{styles.get(r['state'], 'white')}]{r['state']}[/]", str(r["pid"] or ""),
                         str(r["port"] or ""), str(r["restarts"]), last, _fmt_s(r["uptime_s"]),
                         _fmt_s(r["restart_in_s"]))
    gateway = state.get("gateway")
    if not gateway:
        return Group(title, services, replicas)
    edge = Table(header_style="bold")
    for column in ("gateway", "state", "pid", "upstreams", "restarts", "last exit", "uptime", "restart in"):
        edge.add_column(column, no_wrap=column in ("gateway", "state"))
    last = "" if gateway["last_exit_code"] is None else f"exit code {gateway['last_exit_code']}"
    edge.add_row(gateway["url"] or "", f"[{styles.get(gateway['state'], 'white')}]{gateway['state']}[/]",
                 str(gateway["pid"] or ""), str(gateway["upstreams"]), str(gateway["restarts"]), last,
                 _fmt_s(gateway["uptime_s"]), _fmt_s(gateway["restart_in_s"]))
    return Group(title, services, replicas, edge)


def status(
    app_dir: AppDir = Path("."),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Show services, replicas, rollouts; CrashLoopBackOff replicas with their last exit code and log tail.

    During a rollout the ready column counts the current revision's replicas, and each older revision
    that still runs gets a row of its own.

    Example: lichen status --json
    """
    with _client(app_dir) as client:
        state = client.status()
    if as_json:
        print_json(state)
        return
    console.print(status_view(state))
    for r in [*state["replicas"], *([dict(state["gateway"], id="gateway", last_exit_reason="exited")]
                                    if state.get("gateway") else [])]:
        if r["state"] in ("CrashLoopBackOff", "Exited") and r.get("log_tail"):
            code = "" if r["last_exit_code"] is None else f", exit code {r['last_exit_code']}"
            console.print(f"\n[bold red]{r['id']}[/] {r['state']} ({r['last_exit_reason']}{code}); log tail:")
            console.print("\n".join(line[:240] for line in r["log_tail"].splitlines()[-15:]), markup=False,
                          soft_wrap=True)


# ------------------------------------------------------------- logs/events


def logs(
    service: Annotated[str, typer.Argument(help="The service whose replica logs to show.")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", help="Lines per replica to start with (0 to 10000; "
                                       "-f -n 0 prints only new lines).")] = 50,
    include_stopped: Annotated[bool, typer.Option("--all", "-a", help="Also the kept logs of replicas that no "
                                                  "longer run (earlier revisions, crashed, scaled down).")] = False,
    app_dir: AppDir = Path("."),
) -> None:
    """Print the logs of a service's live replicas, merged by time, each line prefixed with its replica.

    JSON lines are ordered by their "ts" field across replicas; a line without one (a traceback, a print)
    stays after the line before it in its own file. --all adds the logs the controller keeps of stopped
    replicas (the 5 newest per service).

    Example: lichen logs recommender -f -n 0
    """
    from lichen.runtime.replica_logs import merge_by_time

    if not 0 <= lines <= 10000:
        raise ConfigError(f"must be from 0 to 10000, got {lines}", where="--lines")
    with _client(app_dir) as client:
        offsets: dict[str, int] = {}
        while True:
            result = client.logs(service, lines=lines, offsets=offsets)
            chunks = {}
            for replica_id, chunk in result["replicas"].items():
                if include_stopped or chunk.get("live", True) or replica_id in offsets:  # a replica that stops
                    offsets[replica_id] = chunk["offset"]  # while followed keeps showing its last lines
                    chunks[replica_id] = chunk["text"]
            for replica_id, line in merge_by_time(chunks):
                sys.stdout.write(f"{replica_id} | {line}\n")
            sys.stdout.flush()
            if not follow:
                return
            time.sleep(0.5)


def _stored_events(app_dir: Path, service: str | None, limit: int) -> list[dict[str, Any]]:
    from lichen.runtime.state import StateStore, sqlite_path
    from lichen.spec.loading import load_spec

    workspace = _workspace(app_dir)
    try:
        db = sqlite_path(load_spec(workspace.spec_path).state.url, workspace.app_dir)
    except Exception:
        db = workspace.root / "state.db"
    if not db.exists():
        raise ControlPlaneError(f"no controller runs for {workspace.app_dir} and it has no state yet; "
                                "start one with 'lichen up'")
    store = StateStore(db)
    try:
        return [dict(e.__dict__) for e in store.events(service, limit)]
    finally:
        store.close()


def events(
    service: Annotated[str | None, typer.Option("--service", "-s", help="Only this service.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="The newest N events.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    app_dir: AppDir = Path("."),
) -> None:
    """Show the event log: started, ready, unready, killed, restarted, rollouts, each with its reason.

    Example: lichen events --service recommender --json
    """
    client = _running_client(app_dir)
    if client is not None:
        with client:
            rows = client.events(service, limit)
    else:  # after 'lichen down' or a crashed controller the log is still on disk: read it there
        rows = _stored_events(app_dir, service, limit)
        err_console.print("no controller runs; events from the state store")
    if as_json:
        print_json(rows)
        return
    from lichen.cli.output import print_table

    print_table(
        None,
        ["time", "service", "replica", "event", "reason", "message"],
        [[time.strftime("%H:%M:%S", time.localtime(e["at"])), e["service"], e["replica"], e["kind"], e["reason"],
          e["message"]] for e in rows],
    )
    if not rows:
        err_console.print("no events")


# -------------------------------------------------------------------- slo


def slo(
    service: Annotated[str | None, typer.Argument(help="Only this service.")] = None,
    window: Annotated[str | None, typer.Option("--window", "-w", help="The SLO window, e.g. 1h or 7d (default: "
                                               "observability.retention, at most 30d).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    app_dir: AppDir = Path("."),
) -> None:
    """Show each service's SLOs: attainment over the window, error budget left, and burn rates.

    Read from the embedded Prometheus with the same expressions as the default burn-rate alerts
    (LichenErrorBudgetBurn, LichenLatencyBudgetBurn). A burn rate of 1 spends the budget exactly over
    the window; a service without requests in the window shows "no traffic".

    Example: lichen slo api --window 1h --json
    """
    from lichen.cli.output import print_table
    from lichen.observe.slo_reports import slo_report, window_of
    from lichen.spec.loading import load_spec

    spec = load_spec(_workspace(app_dir).spec_path)
    if service is not None and service not in spec.services:
        raise ConfigError(f"no service named {service!r} in lichen.yaml (services: {', '.join(sorted(spec.services))})")
    window_s = window_of(window, spec.observability.retention)
    with _client(app_dir) as client:
        report = slo_report(client.query, {n: s.slo for n, s in sorted(spec.services.items())
                                           if service is None or n == service}, window_s, time.time())
    if as_json:
        print_json(report)
        return
    from lichen.control.error_budgets import percent

    rows = [[s["service"], s["slo"], s["objective_text"], percent(s["attainment"]), percent(s["budget_left"]),
             *(_burn(s["burn_rates"].get(w)) for w in ("5m", "1h", "6h")), s["state"]] for s in report["slos"]]
    print_table(f"SLOs over {report['window']}", ["service", "slo", "objective", "attainment", "budget left",
                                                  "burn 5m", "burn 1h", "burn 6h", "state"], rows)


def _burn(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"
