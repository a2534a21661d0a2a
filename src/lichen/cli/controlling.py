"""CLI verbs for the local control plane: up, down, status, scale, restart, logs, events."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from lichen.cli.output import console, dashboard_line, dashboard_url, err_console, is_private, print_json
from lichen.errors import ConfigError, ControlPlaneError

AppDir = Annotated[Path, typer.Option("--app-dir", "-C", help="The app directory (holding lichen.yaml).")]


def register(app: typer.Typer) -> None:
    """Add this module's verbs to the root app."""
    app.command("up")(up)
    app.command("down")(down)
    app.command("status")(status)
    app.command("scale")(scale)
    app.command("restart")(restart)
    app.command("logs")(logs)
    app.command("events")(events)


def _workspace(path: Path | None):  # noqa: ANN202 - keeps the runtime import lazy
    from lichen.runtime.workspaces import workspace_for

    return workspace_for(path)


def _client(path: Path | None):  # noqa: ANN202
    from lichen.api.clients import ControlClient

    return ControlClient(_workspace(path))


def _running_client(path: Path | None):  # noqa: ANN202
    with contextlib.suppress(ControlPlaneError):
        client = _client(path)
        try:
            client._call("GET", "/healthz")
            return client
        except ControlPlaneError:
            client.close()
    return None


# ------------------------------------------------------------------- up


def up(
    path: Annotated[Path, typer.Argument(help="lichen.yaml, or the directory holding it.")] = Path("."),
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Run the controller as a daemon.")] = False,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="With --detach or an update: wait until "
                                       "every service is ready or its rollout settles.")] = True,
    timeout_s: Annotated[float, typer.Option("--timeout-s", help="How long --wait waits.")] = 120.0,
    daemon_child: Annotated[bool, typer.Option("--daemon-child", hidden=True)] = False,
) -> None:
    """Start the app's controller: replicas, probes, self-healing, rolling updates, control API.

    In the foreground it shows a live status table (Ctrl-C drains and stops
    everything). With --detach it runs as a daemon (pidfile
    .lichen/controller.pid, log .lichen/logs/controller.log). If a
    controller already runs for the app, the changed spec/code is applied
    to it as a rolling update. The gateway, the app's entry point, is
    started on gateway.host:gateway.port (127.0.0.1:8080 by default) and its
    URL printed once it is ready.

    Example: lichen up examples/recsys --detach
    """
    workspace = _workspace(path)
    _check_spec_and_rules(workspace, path, running=not daemon_child)  # report errors here, before anything changes
    if not daemon_child:
        from lichen.spec.unbuilt_fields import spec_warnings

        for warning in spec_warnings(workspace.spec_path):  # fields the spec designs but nothing acts on yet
            err_console.print(str(warning), markup=False, soft_wrap=True)
    if daemon_child:
        _serve_foreground(workspace, live=False)
        return
    client = _running_client(path)
    if client is not None:
        with client:
            result = client.apply()
            added, removed = result.get("added") or [], result.get("removed") or []
            changed = [name for name in result["changed"] if name not in added]
            scaled = result.get("scaled") or {}
            if changed:
                console.print(f"rolling update of {', '.join(changed)} started on controller pid {client.pid}")
            if added:
                console.print(f"new service(s) {', '.join(added)} starting on controller pid {client.pid}")
            if removed:
                console.print(f"service(s) {', '.join(removed)} removed: their replicas are stopping")
            for name, (before, after) in sorted(scaled.items()):
                if name not in changed:
                    console.print(f"{name}: replicas {before} -> {after} (controller pid {client.pid})")
            observed = observability_lines(result.get("observability"))
            for line in observed:
                console.print(line, markup=False, highlight=False, soft_wrap=True)
            if not (changed or scaled or added or removed or _observability_applied(result.get("observability"))):
                console.print(f"controller pid {client.pid} already runs this spec; nothing changed")
            if wait:
                _wait_settled(client, timeout_s)
        return
    if detach:
        _start_daemon(workspace, wait, timeout_s)
        return
    _serve_foreground(workspace, live=console.is_terminal)


def _check_spec_and_rules(workspace: Any, path: Path, running: bool) -> None:
    """Load the spec and check the rule files it names (as 'lichen validate' does); on a problem with a
    controller running, say that nothing was applied."""
    from lichen.errors import SpecError
    from lichen.observe.rule_files import rule_file_issues
    from lichen.spec.loading import load_spec

    try:
        load_spec(workspace.spec_path, rule_checker=rule_file_issues)
    except SpecError as exc:
        client = _running_client(path) if running else None
        if client is None:
            raise
        with client:
            raise ConfigError(f"{exc}\nnothing was applied: controller pid {client.pid} keeps running its current "
                              "spec, rules and receivers") from None


def _observability_applied(observed: dict[str, Any] | None) -> bool:
    return bool(observed) and "applied" in (observed["rules"]["status"], observed["notifications"]["status"])


def observability_lines(observed: dict[str, Any] | None) -> list[str]:
    """What ``lichen up`` says about rules and notifications after re-applying the spec (pure)."""
    if not observed:
        return []
    rules, lines = observed["rules"], []
    if rules["status"] == "applied":
        parts = [f"{kind} {', '.join(rules[kind])}" for kind in ("changed", "added", "removed") if rules[kind]]
        kept = rules["unchanged"]
        lines.append("rules: applied (" + "; ".join(parts) + ")" + (
            f"; {kept} unchanged group{'s' if kept != 1 else ''} keep their alert state" if kept else ""))
    else:
        lines.append("rules: unchanged")
    if observed["notifications"]["status"] == "applied":
        receivers = observed["notifications"]["receivers"]
        lines.append("receivers, route and inhibit rules: applied"
                     + (f" (receivers: {', '.join(receivers)})" if receivers else " (no receivers: nothing is notified)"))
    for field in observed.get("restart_needed") or []:
        lines.append(f"{field} changed: it takes effect when the controller restarts ('lichen down', then 'lichen up')")
    return lines


def _serve_foreground(workspace: Any, live: bool) -> None:
    from lichen.api.serving import host_controller
    from lichen.logs import configure, get_logger

    # One JSON line per event (lichen.logs) on stderr: the daemon's controller.log gets every one; above a
    # live status table only warnings and errors show.
    configure("warning" if live else "info")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per probe or scrape would drown the events
    log = get_logger("lichen.controller")

    async def main() -> None:
        if not live:
            def announce(controller: Any) -> None:
                info = json.loads(workspace.controller_file.read_text())
                log.info("controller_serving", pid=info["pid"], url=info["url"], app_dir=str(workspace.app_dir))
                log.info("dashboard_url", url=dashboard_url(info["url"]),  # the log: never the token
                         sign_in="'lichen dashboard' opens it signed in, or paste the token from .lichen/token")
                if controller.gateway is not None:
                    log.info("gateway_url", url=controller.gateway.url)

            await host_controller(workspace, on_ready=announce)
            return
        from rich.live import Live

        with Live(console=console, auto_refresh=False, transient=False) as view:
            def attach(controller: Any) -> None:
                def refresh() -> None:
                    view.update(_status_view(controller.status()), refresh=True)

                refresh()
                url = json.loads(workspace.controller_file.read_text())["url"]
                console.print(dashboard_line(url, _token(workspace), is_private()), markup=False, soft_wrap=True)
                controller.add_periodic("status table", 1.0, refresh)

            await host_controller(workspace, on_ready=attach)

    asyncio.run(main())
    console.print("all replicas stopped")


def _token(workspace: Any) -> str | None:
    from lichen.runtime.workspaces import read_token

    with contextlib.suppress(ControlPlaneError, ConfigError, OSError):
        return read_token(workspace)
    return None


def _start_daemon(workspace: Any, wait: bool, timeout_s: float) -> None:
    workspace.logs.mkdir(parents=True, exist_ok=True)
    log_path = workspace.logs / "controller.log"
    argv = [sys.executable, "-c", "from lichen.cli.main import run; run()", "up", str(workspace.app_dir),
            "--daemon-child"]
    with open(log_path, "ab") as log:
        log_offset = log.tell()
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                                 cwd=workspace.app_dir)
    deadline = time.monotonic() + 60
    from lichen.runtime.workspaces import read_controller_info

    while time.monotonic() < deadline:
        if child.poll() is not None:
            from lichen.runtime.processes import log_tail

            other = _running_client(workspace.app_dir)
            if other is not None:  # another 'lichen up' won the race: report and wait on its controller
                with other:
                    console.print(f"controller pid {other.pid} already runs for {workspace.app_dir}")
                    if wait:
                        _wait_settled(other, timeout_s)
                return
            tail = log_tail(log_path, 1500, since_offset=log_offset).strip()  # this start's lines only
            raise ControlPlaneError(f"the controller exited with code {child.returncode}:\n{tail}")
        info = read_controller_info(workspace)
        if info and info.get("pid") == child.pid:
            break
        time.sleep(0.05)
    else:
        raise ControlPlaneError(f"the controller did not start within 60 s; see {log_path}")
    console.print(f"controller pid {child.pid} serving {info['url']} (log {log_path})", markup=False, soft_wrap=True)
    console.print(dashboard_line(info["url"], _token(workspace), is_private()), markup=False, soft_wrap=True)
    with _client(workspace.app_dir) as client:
        if wait:
            _wait_settled(client, timeout_s)
        else:
            _print_gateway(client.status())


_ERROR_MARKERS = ('"level":"error"', '"level":"critical"', "Traceback", "Error", "error:", "Exception")


def _telling_lines(log_tail: str, count: int = 3) -> list[str]:
    """The lines of a crashed replica's log most likely to say why: the last error lines, else the last lines
    (a replica's final lines are usually its orderly shutdown, which explains nothing). A line repeated by
    each crash of a loop shows once."""
    lines = [line for line in log_tail.splitlines() if line.strip()]
    errors = [line for line in lines if any(marker in line for marker in _ERROR_MARKERS)]
    distinct = list(dict.fromkeys(reversed(errors or lines)))  # the last occurrence of each, newest first
    return distinct[:count][::-1]


def gateway_failure(gateway: dict[str, Any] | None) -> str | None:
    """Why the app's gateway will not become ready, or None: it is in CrashLoopBackOff (it exited again
    soon after a restart), named with its exit code and its own error line (pure)."""
    if not gateway or gateway.get("state") != "CrashLoopBackOff":
        return None
    code = "" if gateway.get("last_exit_code") is None else f" (exit code {gateway['last_exit_code']})"
    why = "".join(f"\n  {line[:300]}" for line in _telling_lines(gateway.get("log_tail") or "", 1))
    return (f"the gateway for {gateway.get('url')} cannot start: it is in CrashLoopBackOff{code}; the controller "
            f"keeps retrying, see 'lichen status' and {gateway.get('log')}{why}")


def _gateway_log_line(gateway: dict[str, Any]) -> str:
    """The gateway's last error line from its log (the CLI runs beside the controller), when it is not Ready."""
    if not gateway.get("log") or gateway.get("state") == "Ready":
        return ""
    from lichen.runtime.processes import log_tail

    lines = _telling_lines(log_tail(Path(gateway["log"]), 8192), 1)
    return "".join(f"\n  gateway: {line[:300]}" for line in lines)


def settle_failure(state: dict[str, Any]) -> str | None:
    """Why waiting for ``state`` to settle is pointless, or None: a stalled rollout, a request larger
    than the machine, a replica of the current revision in CrashLoopBackOff (with its exit and log), or
    a gateway in CrashLoopBackOff (:func:`gateway_failure`)."""
    for name, s in sorted(state["services"].items()):
        rollout = s.get("rollout") or {}
        if rollout.get("status") == "stalled":
            return f"rollout of {name} stalled: {rollout.get('reason')}"
        for condition in s.get("conditions") or []:
            if condition.get("permanent"):
                return f"{name} cannot be placed: {condition['message']}"
        for r in state["replicas"]:
            if r["service"] == name and r["revision"] == s["revision"] and r["state"] == "CrashLoopBackOff":
                code = "" if r["last_exit_code"] is None else f", exit code {r['last_exit_code']}"
                log = "".join(f"\n  {line[:300]}" for line in _telling_lines(r.get("log_tail") or ""))
                return (f"{name}: replica {r['id']} is in CrashLoopBackOff ({r['last_exit_reason']}{code}); "
                        f"the controller keeps retrying, see 'lichen status' and 'lichen logs {name}'{log}")
    return gateway_failure(state.get("gateway"))


def _wait_settled(client: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        state = client.status()
        services = state["services"]
        failure = settle_failure(state)
        if failure:
            raise ControlPlaneError(failure)
        pending = []
        for name, s in services.items():
            current = [r for r in state["replicas"] if r["service"] == name and r["revision"] == s["revision"]]
            ready_current = sum(1 for r in current if r["state"] == "Ready")
            if ready_current < s["desired"] or len([r for r in state["replicas"] if r["service"] == name]) > s["desired"]:
                why = "; ".join(c["message"] for c in s.get("conditions") or [] if c["kind"] == "PlacementRefused")
                pending.append(f"{name} {ready_current}/{s['desired']}" + (f" ({why})" if why else ""))
        gateway = state.get("gateway") or {}
        if gateway.get("url") and gateway.get("state") != "Ready":  # a crash loop stops the wait above
            pending.append(f"gateway {gateway['state']}")
        elif gateway.get("url") and gateway.get("table_confirmed") is False:
            pending.append("gateway routing table")  # Ready replicas the gateway does not route to yet
        if not pending:
            console.print("ready: " + (", ".join(f"{n} {s['ready']}/{s['desired']}" for n, s in services.items())
                                       or "no services in lichen.yaml"))
            _print_gateway(state)
            return
        if time.monotonic() > deadline:
            raise ControlPlaneError(f"not ready after {timeout_s:g}s: {', '.join(pending)} (see 'lichen status')"
                                    + _gateway_log_line(gateway))
        time.sleep(0.2)


# ------------------------------------------------------------------ down


def down(
    path: Annotated[Path, typer.Argument(help="lichen.yaml, or the directory holding it.")] = Path("."),
    timeout_s: Annotated[float, typer.Option("--timeout-s", help="Longest wait for the drain.")] = 300.0,
) -> None:
    """Drain and stop every replica, then the controller; returns when no child process is left.

    Example: lichen down examples/recsys
    """
    from lichen.runtime import processes

    workspace = _workspace(path)
    client = _running_client(path)
    if client is not None:
        with client:
            pids = client.shutdown()["pids"]
            controller_pid = client.pid
        deadline = time.monotonic() + timeout_s
        while processes.is_alive(controller_pid, None):
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"controller pid {controller_pid} still draining after {timeout_s:g}s")
            time.sleep(0.05)
        survivors = [p for p in pids if processes.group_alive(p)]
        for pid in survivors:
            processes.signal_group(pid, 9)
        console.print(f"stopped {len(pids)} replica(s) and controller pid {controller_pid}")
    from lichen.clocks import SystemClock
    from lichen.runtime.teardown import stop_leftovers
    from lichen.runtime.state import StateStore, sqlite_path
    from lichen.spec.loading import load_spec

    try:
        spec = load_spec(workspace.spec_path)
        db = sqlite_path(spec.state.url, workspace.app_dir)
    except Exception:
        db = workspace.root / "state.db"
    if not db.exists():
        if client is None:
            console.print("nothing runs")
        return
    store = StateStore(db)
    try:
        leftovers = asyncio.run(stop_leftovers(workspace, store, SystemClock()))
    finally:
        store.close()
    if leftovers:
        console.print(f"stopped {len(leftovers)} leftover replica process(es): {leftovers}")
    elif client is None:
        console.print("nothing runs")


# ---------------------------------------------------------------- status


def _fmt_s(value: float | None) -> str:
    if value is None:
        return ""
    from lichen.spec.quantities import format_duration

    return format_duration(round(value) if value >= 1 else value)


def _status_view(state: dict[str, Any]) -> Any:
    from rich.console import Group
    from rich.table import Table

    services = Table(title=f"lichen — {state['app_dir']}", header_style="bold", title_justify="left")
    for column in ("service", "revision", "ready", "rollout"):
        services.add_column(column)
    for name, s in sorted(state["services"].items()):
        rollout = s.get("rollout") or {}
        text = rollout.get("status", "")
        if rollout.get("reason"):
            text += f": {rollout['reason']}"
        for condition in s.get("conditions") or []:
            if condition["kind"] == "PlacementRefused":  # crash loops show per replica below
                text += ("; " if text else "") + f"{condition['kind']}: {condition['message']}"
        services.add_row(name, s["revision"], f"{s['ready']}/{s['desired']}", text)
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
        return Group(services, replicas)
    edge = Table(header_style="bold")
    for column in ("gateway", "state", "pid", "upstreams", "restarts", "last exit", "uptime", "restart in"):
        edge.add_column(column, no_wrap=column in ("gateway", "state"))
    last = "" if gateway["last_exit_code"] is None else f"exit code {gateway['last_exit_code']}"
    edge.add_row(gateway["url"] or "", f"[{styles.get(gateway['state'], 'white')}]{gateway['state']}[/]",
                 str(gateway["pid"] or ""), str(gateway["upstreams"]), str(gateway["restarts"]), last,
                 _fmt_s(gateway["uptime_s"]), _fmt_s(gateway["restart_in_s"]))
    return Group(services, replicas, edge)


def _print_gateway(state: dict[str, Any]) -> None:
    """The app's entry point, as ``lichen up`` reports it (or why the gateway is not serving)."""
    gateway = state.get("gateway")
    if not gateway or not gateway.get("url"):
        return
    if gateway["state"] == "Ready":
        console.print(f"gateway: {gateway['url']}  (try: curl {gateway['url']}/-/routes)")
    else:
        tail = (gateway.get("log_tail") or "").strip().splitlines()[-1:]
        console.print(f"gateway {gateway['url']} is {gateway['state']}" + (f": {tail[0][:200]}" if tail else "")
                      + f" (log {gateway['log']})", markup=False)


def status(
    app_dir: AppDir = Path("."),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Show services, replicas, rollouts; CrashLoopBackOff replicas with their last exit code and log tail.

    Example: lichen status --json
    """
    with _client(app_dir) as client:
        state = client.status()
    if as_json:
        print_json(state)
        return
    console.print(_status_view(state))
    for r in [*state["replicas"], *([dict(state["gateway"], id="gateway", last_exit_reason="exited")]
                                    if state.get("gateway") else [])]:
        if r["state"] in ("CrashLoopBackOff", "Exited") and r.get("log_tail"):
            code = "" if r["last_exit_code"] is None else f", exit code {r['last_exit_code']}"
            console.print(f"\n[bold red]{r['id']}[/] {r['state']} ({r['last_exit_reason']}{code}); log tail:")
            console.print("\n".join(line[:240] for line in r["log_tail"].splitlines()[-15:]), markup=False,
                          soft_wrap=True)


# --------------------------------------------------------- scale/restart


def scale(
    service: Annotated[str, typer.Argument(help="The service to scale.")],
    replicas: Annotated[int, typer.Argument(help="The desired number of replicas.", min=0)],
    app_dir: AppDir = Path("."),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Set a service's desired replica count (until the next 'lichen up' applies the spec again).

    Example: lichen scale recommender 3
    """
    with _client(app_dir) as client:
        result = client.scale(service, replicas)
    if as_json:
        print_json(result)
        return
    console.print(f"{service}: desired replicas {replicas}")


def restart(
    service: Annotated[str, typer.Argument(help="The service to restart.")],
    app_dir: AppDir = Path("."),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document (with the new revision).")] = False,
) -> None:
    """Rolling restart of a service: new replicas replace old ones under the rollout settings.

    Example: lichen restart recommender
    """
    with _client(app_dir) as client:
        result = client.restart(service)
    if as_json:
        print_json(result)
        return
    console.print(f"{service}: rolling restart to revision {result['revision']}")


# ------------------------------------------------------------- logs/events


def logs(
    service: Annotated[str, typer.Argument(help="The service whose replica logs to show.")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", help="Lines per replica to start with (0 to 10000; "
                                       "-f -n 0 prints only new lines).")] = 50,
    app_dir: AppDir = Path("."),
) -> None:
    """Print the logs of a service's replicas, each line prefixed with its replica.

    Example: lichen logs recommender -f -n 0
    """
    if not 0 <= lines <= 10000:
        raise ConfigError(f"must be from 0 to 10000, got {lines}", where="--lines")
    with _client(app_dir) as client:
        offsets: dict[str, int] = {}
        while True:
            result = client.logs(service, lines=lines, offsets=offsets)
            for replica_id, chunk in result["replicas"].items():
                offsets[replica_id] = chunk["offset"]
                for line in chunk["text"].splitlines():
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
