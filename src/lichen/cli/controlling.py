"""CLI verbs for the local control plane: up, down, scale, restart (status, logs, events: cli/inspecting.py)."""

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
    app.command("scale")(scale)
    app.command("restart")(restart)


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
        from lichen.green.intensity_sources import sustainability_warnings
        from lichen.spec.unbuilt_fields import spec_warnings

        # fields the spec designs but nothing acts on yet; trace gaps and unset API credentials
        for warning in [*spec_warnings(workspace.spec_path), *sustainability_warnings(workspace.spec_path)]:
            err_console.print(str(warning), markup=False, soft_wrap=True)
    if daemon_child:
        _serve_foreground(workspace, live=False)
        return
    client = _running_client(path)
    if client is not None:
        with client:
            _check_ports(workspace, running=True)  # a new gateway.port another app holds: refused before applying
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
    _check_ports(workspace)  # before a daemon starts: a taken gateway or control port is one line, exit 1
    if detach:
        _start_daemon(workspace, wait, timeout_s)
        return
    _serve_foreground(workspace, live=console.is_terminal)


def _check_spec_and_rules(workspace: Any, path: Path, running: bool) -> None:
    """Load the spec and check the rule files it names (as 'lichen validate' does); on a problem with a
    controller running, say that nothing was applied."""
    from lichen.errors import SpecError
    from lichen.green.intensity_sources import sustainability_issues
    from lichen.observe.rule_files import rule_file_issues
    from lichen.spec.loading import load_spec

    try:
        load_spec(workspace.spec_path, rule_checker=rule_file_issues, data_checker=sustainability_issues)
    except SpecError as exc:
        client = _running_client(path) if running else None
        if client is None:
            raise
        with client:
            raise ConfigError(f"{exc}\nnothing was applied: controller pid {client.pid} keeps running its current "
                              "spec, rules and receivers") from None


def _check_ports(workspace: Any, running: bool = False) -> None:
    """The gateway's and control API's ports are free or this app's own (see lichen.runtime.ports); with a
    controller ``running``, only the gateway's, and a refusal says nothing was applied."""
    from lichen.runtime.ports import check_listen_ports
    from lichen.spec.loading import load_spec

    try:
        check_listen_ports(workspace, load_spec(workspace.spec_path), control=not running)
    except ControlPlaneError as exc:
        if not running:
            raise
        raise ControlPlaneError(f"{exc.message}; nothing was applied", where=exc.where) from None


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
                    log.info("gateway_url", url=controller.gateway.public_url)

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
            canary = s.get("canary")
            if canary:  # settled once the canary runs beside the whole stable set; its steps go on in the background
                stable_ready = sum(1 for r in state["replicas"] if r["service"] == name
                                   and r["revision"] == canary["stable"] and r["state"] == "Ready")
                if ready_current < canary["replicas"] or stable_ready < s["desired"]:
                    pending.append(f"{name} canary {ready_current}/{canary['replicas']}, stable "
                                   f"{stable_ready}/{s['desired']}")
                continue
            if ready_current < s["desired"] or len([r for r in state["replicas"] if r["service"] == name]) > s["desired"]:
                why = "; ".join(c["message"] for c in s.get("conditions") or []
                                if c["kind"] in ("PlacementRefused", "WaitingForDependencies"))
                pending.append(f"{name} {ready_current}/{s['desired']}" + (f" ({why})" if why else ""))
        gateway = state.get("gateway") or {}
        if gateway.get("url") and gateway.get("state") != "Ready":  # a crash loop stops the wait above
            pending.append(f"gateway {gateway['state']}")
        elif gateway.get("url") and gateway.get("table_confirmed") is False:
            pending.append("gateway routing table")  # Ready replicas the gateway does not route to yet
        if not pending:
            console.print("ready: " + (", ".join(
                f"{n} {s['desired']}/{s['desired']} + canary {s['canary']['replicas']} at {s['canary']['weight']}% "
                f"(lichen rollout status {n})" if s.get("canary") else f"{n} {s['ready']}/{s['desired']}"
                for n, s in services.items()) or "no services in lichen.yaml"))
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


def _status_view(state: dict[str, Any]) -> Any:
    """The live table of the foreground 'lichen up': the one 'lichen status' prints."""
    from lichen.cli.inspecting import status_view

    return status_view(state)


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


# --------------------------------------------------------- scale/restart


def scale(
    service: Annotated[str, typer.Argument(help="The service to scale.")],
    replicas: Annotated[int, typer.Argument(help="The desired number of replicas.", min=0)],
    app_dir: AppDir = Path("."),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Set a service's desired replica count (until the next 'lichen up' applies the spec again).

    Refused for a service with 'autoscale:': change its min/max in lichen.yaml instead.

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
