"""CLI verb: ``lichen loadtest`` — open-loop load against an app's gateway or any URL, with an HDR latency report."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Annotated, Any

import typer

from lichen.cli.output import console, err_console, print_json, print_table
from lichen.errors import ConfigError, ControlPlaneError


def register(app: typer.Typer) -> None:
    """Add this module's verbs to the root app."""
    app.command("loadtest")(loadtest)


def _gateway_url(app_path: Path) -> str:
    """The gateway of the app's running ``lichen up``."""
    from lichen.cli.jobs import load_app
    from lichen.runtime import processes
    from lichen.runtime.workspaces import read_controller_info, workspace_for

    spec, app_dir = load_app(app_path)
    info = read_controller_info(workspace_for(app_dir))
    if not info or not processes.is_alive(int(info.get("pid", 0)), None):
        raise ControlPlaneError(f"no controller runs for {app_dir}; start it with 'lichen up', or give --url")
    host = spec.gateway.host if spec.gateway.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    tls = getattr(spec.gateway, "tls", None)
    return f"{'https' if tls is not None else 'http'}://{host}:{spec.gateway.port}"


def _profile(name: str, rate: float, duration: str | None) -> Any:
    from lichen.control.load_profiles import SHAPES, parse_profile, shaped
    from lichen.spec.quantities import parse_duration_s

    try:
        duration_s = parse_duration_s(duration) if duration else None
    except ValueError as exc:
        raise ConfigError(str(exc), where="--duration") from None
    if name in SHAPES:
        if duration_s is None:
            raise ConfigError("a built-in profile needs a duration, e.g. --duration 30s", where="--duration")
        try:
            return shaped(name, rate, duration_s)  # type: ignore[arg-type]
        except ValueError as exc:
            raise ConfigError(str(exc), where="--rate" if "rate" in str(exc) else "--duration") from None
    path = Path(name)
    if not path.is_file():
        raise ConfigError(f"expected one of {', '.join(SHAPES)} or a profile file; no file {name!r}",
                          where="--profile")
    try:
        return parse_profile(path.read_text(encoding="utf-8"), str(path), duration_s)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(str(exc)) from None


def _headers(values: list[str]) -> list[tuple[str, str]]:
    parsed = []
    for value in values:
        name, sep, text = value.partition(":")
        if not sep or not name.strip() or any(c in value for c in "\r\n"):
            raise ConfigError(f"expected 'Name: value', got {value!r}", where="--header")
        parsed.append((name.strip(), text.strip()))
    return parsed


def _live_table(progress: dict[str, Any], target_rps: float) -> Any:
    from rich.table import Table

    table = Table(box=None, show_header=True)
    for column in ("elapsed", "target rps", "sent", "answered", "failed", "in flight", "waiting", "p99 so far"):
        table.add_column(column, justify="right")
    p99 = progress["p99_ms"]
    table.add_row(f"{progress['elapsed_s']:.1f} s", f"{target_rps:.0f}", str(progress["scheduled"]),
                  str(progress["answered"]), str(progress["failed"]), str(progress["in_flight"]),
                  str(progress["waiting"]), "-" if p99 is None else f"{p99:.1f} ms")
    return table


def loadtest(
    app_path: Annotated[Path, typer.Argument(help="The app (lichen.yaml or its directory) whose gateway to load; "
                                                  "ignored with --url.")] = Path("."),
    rate: Annotated[float, typer.Option("--rate", "-r", help="Requests per second (the peak for step, ramp; the "
                                                            "base for spike).")] = 100.0,
    duration: Annotated[str | None, typer.Option("--duration", "-d", help="How long to send, e.g. 30s or 2m "
                                                                         "(a profile file: default its last point).")] = None,
    profile: Annotated[str, typer.Option("--profile", "-p", help="constant, step (5 rises), ramp (0 to --rate), "
                                                                 "spike (5x for the middle tenth), or a file of "
                                                                 "'SECONDS RATE' lines.")] = "constant",
    url: Annotated[str | None, typer.Option("--url", help="Load this URL instead of the app's gateway.")] = None,
    routes: Annotated[list[str] | None, typer.Option("--route", help="A path to request (repeatable; taken in "
                                                                     "turn). Default: the URL's path, or /.")] = None,
    method: Annotated[str, typer.Option("--method", "-X", help="HTTP method.")] = "GET",
    body: Annotated[Path | None, typer.Option("--body", help="File whose bytes are every request's body.")] = None,
    headers: Annotated[list[str] | None, typer.Option("--header", "-H", help="'Name: value' (repeatable).")] = None,
    arrivals: Annotated[str, typer.Option("--arrivals", help="uniform (evenly spaced, as wrk2) or poisson "
                                                             "(random gaps, as real users).")] = "uniform",
    connections: Annotated[int, typer.Option("--connections", "-c", min=1, help="At most this many connections; "
                                                                                 "more requests wait their turn.")] = 512,
    timeout_s: Annotated[float, typer.Option("--timeout-s", min=0.001, help="A request with no full answer by "
                                                                            "then fails as a timeout.")] = 10.0,
    insecure: Annotated[bool, typer.Option("--insecure", "-k", help="Do not verify the TLS certificate.")] = False,
    cacert: Annotated[Path | None, typer.Option("--cacert", help="Trust this CA file for https.")] = None,
    log_path: Annotated[Path | None, typer.Option("--log", help="Write one CSV line per request: intended "
                                                                "offset, latency, status, failure.")] = None,
    max_p99_ms: Annotated[float | None, typer.Option("--max-p99-ms", help="Exit 1 when p99 is above this.")] = None,
    max_error_ratio: Annotated[float | None, typer.Option("--max-error-ratio", help="Exit 1 when failures and "
                                                                                     "5xx exceed this share.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for poisson arrivals.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON (the live view goes to stderr).")] = False,
) -> None:
    """Send requests on a schedule (open loop), whatever the server does, and report latency from each
    request's intended send time: p50/p90/p99/p99.9/max, throughput, failures by status and kind.

    A slow server cannot slow the generator down and hide its queueing (no
    coordinated omission); the generator's own lag and CPU are reported too.

    Example: lichen loadtest examples/recsys --route /recommend/1 --rate 200 --duration 30s --profile step
    """
    from lichen.control.load_profiles import arrival_offsets
    from lichen.trials.load_generation import LoadEngine, build_target
    from lichen.trials.load_reports import summary

    if arrivals not in ("uniform", "poisson"):
        raise ConfigError(f"expected uniform or poisson, got {arrivals!r}", where="--arrivals")
    shape = _profile(profile, rate, duration)
    payload = b""
    if body is not None:
        try:
            payload = body.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the body file: {exc.strerror}", where=str(body)) from None
    if cacert is not None and not cacert.is_file():
        raise ConfigError("no such CA file", where=str(cacert))
    target_url = url or _gateway_url(app_path)
    try:
        target = build_target(target_url, list(routes or []), method.upper(), payload, _headers(list(headers or [])),
                              verify_tls=not insecure, ca_file=str(cacert) if cacert else None)
    except (ValueError, OSError) as exc:
        raise ConfigError(str(exc), where="--url" if "URL" in str(exc) else "--route") from None
    engine = LoadEngine(target, arrival_offsets(shape, arrivals, seed), max_connections=connections,  # type: ignore[arg-type]
                        timeout_s=timeout_s, keep_log=log_path is not None)
    target_rps = shape.expected_requests() / shape.duration_s
    out = err_console if as_json else console
    out.print(f"loading {target_url} ({', '.join(target.routes)}): {shape.name}, {target_rps:.0f} req/s on "
              f"average for {shape.duration_s:g} s, {arrivals} arrivals", markup=False)
    result = _run(engine, out, target_rps)
    report = summary(result, shape, target_url, target.routes)
    if log_path is not None:
        _write_log(log_path, result.log or [])
    if as_json:
        print_json(report)
    else:
        _print_report(report)
    _check(report, max_p99_ms, max_error_ratio)


def _run(engine: Any, out: Any, target_rps: float) -> Any:
    from rich.live import Live

    with Live(_live_table(engine.progress(), target_rps), console=out, refresh_per_second=4,
              transient=True) as live:
        def tick(running: Any) -> None:
            live.update(_live_table(running.progress(), target_rps))

        runner_loop = _loop_factory()
        with asyncio.Runner(loop_factory=runner_loop) as runner:
            return runner.run(engine.run(on_tick=tick, tick_s=0.25))


def _loop_factory() -> Any:
    with contextlib.suppress(ImportError):
        import uvloop

        return uvloop.new_event_loop
    return None


def _write_log(path: Path, rows: list[tuple[float, float, int, str]]) -> None:
    from lichen.runtime.workspaces import atomic_write

    lines = ["intended_offset_s,latency_ms,status,failure"]
    lines.extend(f"{offset:.6f},{latency:.3f},{status},{kind}" for offset, latency, status, kind in
                 sorted(rows))
    atomic_write(path, "\n".join(lines) + "\n")


def _print_report(report: dict[str, Any]) -> None:
    latency = report["latency_ms"]
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    print_table(f"{report['url']} · {report['profile']} · {report['elapsed_s']:.1f} s", [
        "target req/s", "answered req/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "errors"], [[
            f"{report['target_rps']:.1f}", f"{report['throughput_rps']:.1f}", fmt(latency["p50"]),
            fmt(latency["p90"]), fmt(latency["p99"]), fmt(latency["p99.9"]), fmt(latency["max"]),
            f"{report['error_ratio'] * 100:.2f} %"]])
    statuses = ", ".join(f"{status}: {n}" for status, n in report["statuses"].items()) or "none"
    failures = ", ".join(f"{kind}: {n}" for kind, n in report["failures"].items()) or "none"
    generator = report["generator"]
    console.print(f"answers by status: {statuses}; failures by kind: {failures}", markup=False)
    console.print(f"generator: lag p99 {fmt(generator['lag_p99_ms'])} ms, max {fmt(generator['lag_max_ms'])} ms; "
                  f"{generator['cpu_us_per_request']} µs CPU per request; "
                  f"{generator['connections_opened']} connections opened", markup=False)


def _check(report: dict[str, Any], max_p99_ms: float | None, max_error_ratio: float | None) -> None:
    broken = []
    p99 = report["latency_ms"]["p99"]
    if max_p99_ms is not None and (p99 is None or p99 > max_p99_ms):
        broken.append(f"p99 {p99} ms > {max_p99_ms:g} ms")
    if max_error_ratio is not None and report["error_ratio"] > max_error_ratio:
        broken.append(f"error ratio {report['error_ratio']:.4f} > {max_error_ratio:g}")
    if broken:
        err_console.print("[bold red]failed:[/] " + "; ".join(broken))
        raise SystemExit(1)
