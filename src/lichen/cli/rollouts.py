"""CLI verbs: ``lichen rollout status|promote|abort|pause|resume SERVICE`` for canary rollouts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from lichen.cli.controlling import AppDir, _client
from lichen.cli.output import console, print_json, print_table

rollout_app = typer.Typer(help="Show and steer canary rollouts (rollout.strategy: canary).", no_args_is_help=True)
ServiceArg = Annotated[str, typer.Argument(help="The service whose rollout to show or steer.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]


def rollout_lines(status: dict[str, Any]) -> list[str]:
    """The summary lines of ``lichen rollout status`` (pure, for tests)."""
    name = status["service"]
    if status.get("canary") is None:
        lines = [f"{name}: no canary in progress; revision {status['revision']} serves all traffic "
                 f"(strategy {status['strategy']}, {status['phase']})"]
    else:
        steps = status["steps"]
        lines = [f"{name}: canary {status['canary']} at {status['weight']:g}% (step {status['step']} of "
                 f"{len(steps)}: {' → '.join(str(s) for s in steps)}), stable {status['stable']}"
                 + (f", PAUSED: {status['pause_reason']}" if status.get("pause_reason") else ""),
                 "weights: " + ", ".join(f"{rev} {weight:g}%" for rev, weight in status["weights"].items())
                 + f"; canary replicas {status['canary_replicas']}"]
    last = status.get("last_analysis")
    if last:
        lines.append(f"last analysis: {last['verdict']} → {last['action']}: " + "; ".join(last["reasons"][:3]))
    return lines


def rollout_status(service: ServiceArg, app_dir: AppDir = Path("."), as_json: JsonOption = False) -> None:
    """Show a service's canary rollout: the step, the weights, the last analysis with its numbers, the history.

    Example: lichen rollout status recommender
    """
    with _client(app_dir) as client:
        status = client.rollout(service)
    if as_json:
        print_json(status)
        return
    for line in rollout_lines(status):
        console.print(line, markup=False)
    history = status.get("history") or []
    if history:
        print_table("history", ["time", "weight", "verdict", "reason"],
                    [[time.strftime("%H:%M:%S", time.localtime(h["at"])),
                      f"{h['weight']}%", h["kind"], h["reason"]] for h in history[-15:]])


def _act(action: str, service: str, app_dir: Path, as_json: bool, reason: str = "") -> None:
    with _client(app_dir) as client:
        result = client.rollout_action(service, action, reason)
    if as_json:
        print_json(result)
        return
    console.print(f"{service}: {result['reason']}", markup=False)


def promote(service: ServiceArg, app_dir: AppDir = Path("."), as_json: JsonOption = False) -> None:
    """Promote the canary now: all traffic to it, whatever the analyses say; the stable revision drains.

    Example: lichen rollout promote recommender
    """
    _act("promote", service, app_dir, as_json)


def abort(service: ServiceArg, app_dir: AppDir = Path("."), as_json: JsonOption = False,
          reason: Annotated[str, typer.Option("--reason", help="Why, for the event and the history.")] = "") -> None:
    """Abort the canary now: its weight goes to 0, the stable revision takes all traffic, the canary drains.

    Example: lichen rollout abort recommender --reason "wrong model file"
    """
    _act("abort", service, app_dir, as_json, reason)


def pause(service: ServiceArg, app_dir: AppDir = Path("."), as_json: JsonOption = False) -> None:
    """Pause the canary at its weight: analyses are recorded, nothing advances or promotes until resumed.

    Example: lichen rollout pause recommender
    """
    _act("pause", service, app_dir, as_json)


def resume(service: ServiceArg, app_dir: AppDir = Path("."), as_json: JsonOption = False) -> None:
    """Resume a paused canary: its step is analysed again.

    Example: lichen rollout resume recommender
    """
    _act("resume", service, app_dir, as_json)


def register(app: typer.Typer) -> None:
    """Add this module's verbs to the root app."""
    for name, fn in (("status", rollout_status), ("promote", promote), ("abort", abort), ("pause", pause),
                     ("resume", resume)):
        rollout_app.command(name)(fn)
    app.add_typer(rollout_app, name="rollout")
