"""CLI verb: ``lichen energy`` — energy, carbon and the SCI per service and revision, with sources and error bars."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from lichen.cli.controlling import AppDir, _client, _workspace
from lichen.cli.output import console, print_json, print_table
from lichen.errors import ConfigError
from lichen.spec.quantities import parse_duration_s

MAX_WINDOW_S = 400 * 86400


def band(figure: dict[str, Any] | None, unit: str, digits: int = 3) -> str:
    """``12.3 J (9.1–15.8)``; a measured figure (equal bounds) shows no band."""
    if figure is None:
        return ""
    value, low, high = figure["value"], figure["low"], figure["high"]
    if abs(high - low) <= 1e-12 * max(1.0, abs(value)):
        return f"{value:.{digits}g} {unit}"
    return f"{value:.{digits}g} {unit} ({low:.{digits}g}–{high:.{digits}g})"


def window_option_s(window: str, min_s: float, min_shown: str) -> float:
    """``--window`` in seconds, between ``min_s`` and 400 days; a located error otherwise."""
    try:
        window_s = parse_duration_s(window)
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc), where="--window") from None
    if not min_s <= window_s <= MAX_WINDOW_S:
        raise ConfigError(f"must be between {min_shown} and 400d, got {window}", where="--window")
    return window_s


def check_service_option(spec_path: Path, service: str | None) -> None:
    """``--service`` must name a service of the spec; a located error naming them otherwise."""
    if service is None:
        return
    from lichen.spec.loading import load_spec

    names = sorted(load_spec(spec_path).services)
    if service not in names:
        raise ConfigError(f"no service named {service!r} in lichen.yaml (services: {', '.join(names)})",
                          where="--service")


def report_lines(report: dict[str, Any]) -> list[str]:
    """The lines printed under the tables (pure, for tests): node, intensity, sources, cost, problems."""
    meter = report.get("meter") or {}
    lines = []
    cpu = meter.get("cpu") or {}
    if cpu:
        lines.append(f"node: {meter.get('node_source')} (CPU {cpu['tdp_w']:g} W from {cpu['source']}); "
                     f"GPU: {meter.get('gpu_source') or 'none'}; PUE {meter.get('pue')}")
    node = report.get("node") or {}
    lines.append(f"idle (not spread over services): {band(node.get('idle_j'), 'J') or '0 J'}; "
                 f"unattributed (other processes): {band(node.get('unattributed_j'), 'J') or '0 J'}")
    intensity = meter.get("intensity_g_per_kwh")
    if intensity:
        lines.append(f"carbon intensity now: {band({**intensity}, 'g/kWh')} from {intensity['source']}")
    cost = report.get("accounting_cost") or {}
    if cost.get("share_of_controller") is not None:
        lines.append(f"accounting cost: {cost['cpu_s']:.3g} CPU s, {cost['share_of_controller']:.1%} of the "
                     "controller's CPU")
    for source, problem in sorted((meter.get("problems") or {}).items()):
        lines.append(f"{source}: {problem}")
    for entry in meter.get("intensity_sources") or []:
        if entry.get("problem"):
            lines.append(f"{entry['source']}: {entry['problem']}")
    return lines


def energy(
    window: Annotated[str, typer.Option("--window", "-w", help="How far back to look, e.g. 15m, 1h, 7d.")] = "1h",
    service: Annotated[str | None, typer.Option("--service", "-s", help="Only this service.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    app_dir: AppDir = Path("."),
) -> None:
    """Report energy, carbon and the SCI per service and revision over a window, with sources and error bars.

    Energy comes from RAPL where readable, else a CPU power model (its band shown in brackets); GPU energy
    from NVML. The node's idle energy is reported apart, never spread over services. The SCI is
    (E·I + M) per 1,000 requests (ISO/IEC 21031:2024). Read from the embedded Prometheus, so a window
    covers only what was scraped.

    Example: lichen energy --window 15m --json
    """
    window_s = window_option_s(window, 1, "1s")
    check_service_option(_workspace(app_dir).spec_path, service)
    with _client(app_dir) as client:
        report = client.energy(window_s)
    if service is not None:
        report["services"] = [s for s in report["services"] if s["service"] == service]
        report["revisions"] = [r for r in report["revisions"] if r["service"] == service]
    if as_json:
        print_json(report)
        return
    title = f"energy over {report['window']}"
    print_table(title, ["service", "requests", "energy", "J/request", "carbon", "SCI g/1000 req"],
                [[s["service"], f"{s['requests']:.0f}", band(s.get("energy_j"), "J"),
                  band(s.get("energy_per_request_j"), "J"), band(s.get("carbon_g"), "g"),
                  band(s.get("sci_g_per_1000_requests"), "g")] for s in report["services"]])
    print_table("by revision", ["service", "revision", "sources", "requests", "J/request", "SCI g/1000 req"],
                [[r["service"], r["revision"], ", ".join((r.get("energy_j") or {}).get("sources", [])),
                  f"{r['requests']:.0f}", band(r.get("energy_per_request_j"), "J"),
                  band(r.get("sci_g_per_1000_requests"), "g")] for r in report["revisions"]])
    for line in report_lines(report):
        console.print(line, markup=False)


def register(app: typer.Typer) -> None:
    """Add this module's verbs to the root app."""
    app.command("energy")(energy)
