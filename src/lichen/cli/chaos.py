"""CLI verb: ``lichen chaos APP EXPERIMENT.yaml`` — inject faults under load, measure, check hypotheses, undo."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from lichen.cli.output import console, err_console, print_json, print_table
from lichen.errors import ControlPlaneError


def register(app: typer.Typer) -> None:
    """Add this module's verbs to the root app."""
    app.command("chaos")(chaos)


def chaos(
    app_path: Annotated[Path, typer.Argument(help="The running app (lichen.yaml or its directory).")],
    experiment_path: Annotated[Path, typer.Argument(help="The experiment: load, faults, hypotheses (docs/reliability.md).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON (progress goes to stderr).")] = False,
) -> None:
    """Run a chaos experiment against the app's running `lichen up`: an open-loop load, faults at their times
    (kill -9 or SIGSTOP of replicas, kill -9 of the gateway or the controller, added latency, errors, resets or a
    bandwidth limit in a service's traffic at the gateway, a rolling restart, an alert receiver held down, SIGSTOP
    of a dependency such as Redis by its port, a slow or full disk under the state store), then time to detect,
    time to recover, failed and retried requests, notifications lost, and whether each hypothesis held (exit 1
    when one did not).

    The experiment is checked whole before anything is injected; every fault still in effect is undone on the
    way out, even on Ctrl-C, and the report says what was restored.

    Example: lichen chaos examples/recsys examples/recsys/experiments/replica-kill.yaml --json
    """
    from lichen.cli.jobs import load_app
    from lichen.cli.loadtest import _gateway_url, _loop_factory
    from lichen.runtime.workspaces import workspace_for
    from lichen.spec.experiments import load_experiment
    from lichen.trials.chaos_dependencies import dependency_problem
    from lichen.trials.chaos_runs import ChaosRun

    spec, app_dir = load_app(app_path)
    experiment = load_experiment(experiment_path, spec, check_port=lambda port: dependency_problem(port, app_dir))
    url = _gateway_url(app_path)
    out = err_console if as_json else console
    out.print(f"chaos {experiment.name}: {len(experiment.faults)} fault(s) under {experiment.load.rate:g} req/s "
              f"for {experiment.run_s():g} s against {url}", markup=False)
    run = ChaosRun(workspace_for(app_dir), spec, experiment, url, say=lambda line: out.print(line, markup=False))
    previous = signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM undoes the faults too, as Ctrl-C does
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            report = runner.run(run.run())
    except KeyboardInterrupt:
        run.restore()
        err_console.print("interrupted; " + ("; ".join(run.restored) or "no fault was still in effect"))
        raise SystemExit(130) from None
    except httpx.HTTPError as exc:  # the controller refused a fault or stopped answering mid-run
        run.restore()
        detail = exc.response.text[:300] if isinstance(exc, httpx.HTTPStatusError) else str(exc) or type(exc).__name__
        raise ControlPlaneError(f"the controller of {app_dir} refused or did not answer during the run: {detail}; "
                                + ("; ".join(run.restored) or "no fault was still in effect")) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    if as_json:
        print_json(report)
    else:
        _print(report)
    if not report["held"]:
        raise SystemExit(1)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _seconds(value: float | None, missing: str) -> str:
    return missing if value is None else f"{value:.2f} s"


def _print(report: dict[str, Any]) -> None:
    load = report["load"]
    print_table(f"faults · {report['experiment']}", ["fault", "target", "at", "detected after", "recovered after",
                                                     "failed requests"],
                [[f["kind"], f["target"], f"{f['injected_s']:.2f} s", _seconds(f["detected_s"], "not detected"),
                  _seconds(f["recovered_s"], "not recovered"), f["failed"]] for f in report["faults"]])
    latency = load["latency_ms"]
    console.print(f"load: {load['scheduled']} requests at {load['target_rps']:g} req/s, {load['answered']} answered; "
                  f"p50 {latency['p50']} ms, p99 {latency['p99']} ms, max {latency['max']} ms; "
                  f"error ratio {load['error_ratio'] * 100:.3f} %; failures {load['failures'] or 'none'}; "
                  f"gateway retries {report['retries']} (amplification {report['retry_amplification']})",
                  markup=False)
    notes = report.get("notifications")
    if notes is not None:
        console.print(f"notifications: {notes['error']}" if "error" in notes else
                      f"notifications created during the run: {notes['created']}, delivered {notes['delivered']}, "
                      f"lost {notes['lost']} ({notes['failed']} given up, {notes['pending']} still pending after "
                      f"waiting {notes['drain_waited_s']:g} s of at most {notes['drain_bound_s']:g} s for the outbox)",
                      markup=False)
    store = report.get("state_store")
    if store is not None:
        console.print(f"state store: {store['failed_writes']} write attempt(s) failed for want of disk, "
                      f"{store['pending_writes']} still waiting, {store['dropped_writes']} dropped"
                      + (f"; last error: {store['last_error']}" if store["last_error"] else ""), markup=False)
    console.print(f"orphaned processes: {report['orphans'] or 'none'}; restored: "
                  f"{'; '.join(report['restored']) or 'nothing left to restore'}", markup=False)
    for verdict in report["hypotheses"]:
        mark = "[green]held[/]" if verdict["held"] else "[red]did not hold[/]"
        console.print(f"  {verdict['hypothesis']}: {mark} (measured {verdict['measured']})")
