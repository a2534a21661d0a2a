"""CLI verbs for jobs: ``lichen run`` and ``lichen runs``."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from lichen.cli.output import console, err_console, print_json, print_table
from lichen.errors import ConfigError
from lichen.runtime.audit_logs import audited, record_cli_action
from lichen.runtime.job_runs import STATUS_SUCCEEDED, JobRun, JobRunStore, state_db_path
from lichen.runtime.running_jobs import JobRunner


class PassthroughCommand(typer.core.TyperCommand):
    """Keeps everything after the first ``--`` for the jobs, untouched by option parsing."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            split = args.index("--")
            ctx.meta["lichen_passthrough"] = args[split + 1 :]
            args = args[:split]
        return super().parse_args(ctx, args)


def resolve_spec_path(app_path: Path) -> Path:
    """``--app`` may name the spec file or the directory holding ``lichen.yaml``."""
    path = app_path.expanduser()
    if path.is_dir():
        path = path / "lichen.yaml"
    if not path.is_file():
        raise ConfigError(f"no spec at {path} (pass --app PATH to lichen.yaml or its directory)")
    return path.absolute()


def load_app(app_path: Path) -> tuple[Any, Path]:
    from lichen.spec.loading import load_spec

    spec_path = resolve_spec_path(app_path)
    return load_spec(spec_path), spec_path.parent


def _fmt_time(ts: float | None) -> str:
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(ts).strftime("%m-%d %H:%M:%S")


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def _fmt_memory(size: int | None) -> str:
    if size is None:
        return ""
    return f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{size / 2**20:.0f} MiB"


def _short_path(path: str, base: Path) -> str:
    try:
        return os.path.relpath(path, base) if Path(path).is_relative_to(base) else path
    except ValueError:
        return path


class ProgressEvents:
    """Rich progress bars above streamed, job-prefixed log lines."""

    def __init__(self, progress: Progress, total: int, show_logs: bool = True) -> None:
        self.progress = progress
        self.overall = progress.add_task("pipeline", total=total)
        self.tasks: dict[str, Any] = {}
        self.show_logs = show_logs

    def job_started(self, run: JobRun, index: int, total: int) -> None:
        label = run.job if run.attempt == 1 else f"{run.job} (attempt {run.attempt})"
        self.tasks[run.run_id] = self.progress.add_task(label, total=None)

    def job_output(self, run: JobRun, line: str) -> None:
        if self.show_logs:
            text = Text(f"[{run.job}] ", style="dim")
            text.append(line)
            self.progress.console.print(text, soft_wrap=True)

    def job_progress(self, run: JobRun, done: float, total: float, label: str) -> None:
        task = self.tasks.get(run.run_id)
        if task is not None and total > 0:
            name = run.job if run.attempt == 1 else f"{run.job} (attempt {run.attempt})"
            self.progress.update(task, total=total, completed=min(done, total),
                                 description=f"{name} [dim]{label}[/]" if label else name)

    def job_finished(self, run: JobRun) -> None:
        task = self.tasks.get(run.run_id)
        label = run.job if run.attempt == 1 else f"{run.job} (attempt {run.attempt})"
        ok = run.status == STATUS_SUCCEEDED
        mark = "[green]✓[/]" if ok else "[red]✗[/]"
        if task is not None:
            state = next(t for t in self.progress.tasks if t.id == task)
            total = state.total or 1  # keep a job's own N of M
            self.progress.update(
                task, total=total, completed=total if ok else state.completed,
                description=f"{mark} {label} [dim]{run.status}[/]",
            )
            self.progress.stop_task(task)
        if ok:
            self.progress.advance(self.overall)


def run_command(
    ctx: typer.Context,
    jobs: Annotated[list[str] | None, typer.Argument(help="Jobs to run (default: all), in depends_on order.")] = None,
    app_path: Annotated[Path, typer.Option("--app", help="lichen.yaml or its directory.")] = Path("."),
    with_deps: Annotated[bool, typer.Option("--with-deps", help="Also run the jobs the named jobs depend on.")] = False,
    data: Annotated[
        str | None,
        typer.Option("--data", help="The pipeline's input: '--data PATH' for the jobs that start it (no dependencies)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the runs as JSON; logs go to stderr.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Do not stream job logs (they are still saved).")] = False,
) -> None:
    """Run the spec's jobs as subprocesses, dependencies first; stop at the first failure.

    Everything after `--` is passed to each job that runs. `--data PATH` is
    the pipeline's input and goes only to the jobs that start it (those that
    depend on no other job being run). Each run is recorded; see `lichen runs`.

    Example: lichen run ingest features --app examples/recsys -- --data ../shared/data/ml-100k
    """
    spec, app_dir = load_app(app_path)
    params = list(ctx.meta.get("lichen_passthrough", []))
    source_params = ["--data", str(Path(data).expanduser().resolve())] if data is not None else []
    names = list(jobs or [])
    runner = JobRunner(spec, app_dir)
    order = runner.plan(names, with_deps=with_deps)
    if not order:
        raise ConfigError(f"the spec at {app_dir / 'lichen.yaml'} defines no jobs")
    out = err_console if as_json else console
    progress = Progress(
        SpinnerColumn(finished_text=""),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=out,
        transient=False,
    )
    events = ProgressEvents(progress, total=len(order), show_logs=not quiet)
    runner.events = events
    shown = " ".join([*source_params, *params])
    out.print(f"running {len(order)} job(s): {' → '.join(order)}" + (f"  params: {shown}" if shown else ""),
              markup=False)
    audit_root, audit_params = app_dir / ".lichen", {"jobs": order, "params": shown}
    with progress, audited(audit_root, "run", audit_params, record_success=False):
        result = runner.run(names, params, with_deps=with_deps, source_params=source_params)
    failed = result.failed
    record_cli_action(audit_root, "run", {**audit_params, "pipeline_id": result.pipeline_id},
                      "ok" if failed is None else "error",
                      "" if failed is None else f"job {failed.job} {failed.status} with exit code {failed.exit_code}")
    if as_json:
        print_json({"pipeline_id": result.pipeline_id, "exit_code": result.exit_code,
                    "runs": [r.to_json() for r in result.runs]})
    if failed is not None:
        tail = failed.log_tail or "(no output)"
        err_console.print(Panel(Text(tail), title=f"last lines of {failed.job}", subtitle=failed.log_path or ""))
        skipped = order[order.index(failed.job) + 1 :]
        err_console.print(
            f"[bold red]error:[/] job {failed.job} {failed.status} with exit code {failed.exit_code}"
            f" after {_fmt_duration(failed.duration_s)}"
            + (f"; not run: {', '.join(skipped)}" if skipped else "")
        )
        # SystemExit, not typer.Exit: the root runs click with standalone_mode=False,
        # where an Exit's code would be returned and lost.
        raise SystemExit(result.exit_code)
    if not as_json:
        artifacts = [a for r in result.runs for a in r.artifacts]
        console.print(
            f"[green]done[/]: {len(result.runs)} job(s) succeeded"
            + (f", {len(artifacts)} artifact(s) written" if artifacts else "")
            + "; see `lichen runs`"
        )


def runs_command(
    job: Annotated[str | None, typer.Option("--job", help="Only this job's runs.")] = None,
    app_path: Annotated[Path, typer.Option("--app", help="lichen.yaml or its directory.")] = Path("."),
    limit: Annotated[int, typer.Option("--limit", help="At most this many runs, newest first.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """List job run history: job, trigger (a schedule under lichen up, or lichen run), start, duration, peak
    memory (the resident set of the job's largest process), status, exit code and artifacts.

    Example: lichen runs --app examples/recsys --job train --json
    """
    spec, app_dir = load_app(app_path)
    store = JobRunStore(state_db_path(spec.state.url, app_dir))
    runs = store.list(job=job, limit=limit)
    if as_json:
        print_json([r.to_json() for r in runs])
        return
    rows = [
        [
            r.run_id,
            r.job,
            "schedule" if r.pipeline_id.startswith("cron-") else "lichen run",
            _fmt_time(r.started_at),
            _fmt_duration(r.duration_s),
            _fmt_memory(r.max_rss_bytes),
            r.status,
            "" if r.exit_code is None else r.exit_code,
            "\n".join(_short_path(a, app_dir) for a in r.artifacts),
        ]
        for r in runs
    ]
    print_table(f"job runs ({app_dir.name})", ["run", "job", "trigger", "start", "duration", "peak memory", "status",
                                               "exit", "artifacts"], rows)


def register(app: typer.Typer) -> None:
    """Add this module's verbs to the root app."""
    app.command(
        "run",
        cls=PassthroughCommand,
        context_settings={"allow_interspersed_args": True},
    )(run_command)
    app.command("runs")(runs_command)
