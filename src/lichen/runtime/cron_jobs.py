"""Scheduled jobs under ``lichen up``: cron schedules with CronJob semantics, and carbon-aware starts.

Every second :class:`CronJobs` asks the pure :func:`lichen.control.cron_schedules.due` what each job with
a ``schedule`` owes at the controller's wall clock, from the schedule time it last handled (kept in the
state store's ``cron_schedules`` table, so a restarted controller knows what it missed):

* nothing due: nothing happens;
* a time past ``starting_deadline_s``: recorded as missed (event ``CronMissed``), not started;
* a time due while a run of the job is active: ``concurrency_policy: forbid`` (the default) skips it
  (``CronSkipped``), ``allow`` starts another, ``replace`` stops the active run first;
* otherwise the run starts (``CronStarted``) — or, for a job with ``carbon_aware``, is planned
  (``CronPlanned``) at the start :func:`lichen.control.carbon_planning.plan` picks before its deadline,
  and starts then. The job's expected duration is the median of its last five successful runs (its
  ``timeout_s``, else an hour, before it has any). The forecast is ``sustainability.intensity_trace``'s
  rows after now where the trace reaches the deadline (a forecast file), else ``intensity_api``'s own
  forecast (Electricity Maps, WattTime, the Carbon Aware SDK), else a forecast from the trace's rows
  before now; with none of them the run starts at once, saying why.

Only the latest of several missed times runs, as the CronJob controller does. Runs go through the same
:class:`~lichen.runtime.running_jobs.JobRunner` as ``lichen run`` (a worker thread each), recorded with a
pipeline id ``cron-<job>-<time>`` so ``lichen runs`` shows them; finished scheduled runs beyond
``successful_runs_kept``/``failed_runs_kept`` are pruned with their logs. At shutdown active runs are
stopped as on Ctrl-C and awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from lichen.clocks import Clock
from lichen.control import carbon_planning, cron_schedules
from lichen.errors import DataError, LichenError
from lichen.green.intensity_apis import IntensityApiError
from lichen.green.intensity_sources import api_forecast
from lichen.green.intensity_traces import read_trace
from lichen.logs import get_logger
from lichen.runtime.job_runs import STATUS_SUCCEEDED, JobRunStore, state_db_path
from lichen.runtime.running_jobs import JobRunner
from lichen.spec.models import AppSpec, JobSpec, SustainabilitySpec

log = get_logger("lichen.controller")
PIPELINE_PREFIX = "cron-"
DEFAULT_DURATION_S = 3600.0
DURATION_RUNS = 5
HISTORY_S = 29 * 86400.0
"""the history the forecaster reads (its weekly profile looks four weeks back)"""


class CronController(Protocol):
    clock: Clock
    app_spec: AppSpec | None

    def event(self, service: str, kind: str, reason: str = "", message: str = "", replica: str = "") -> None: ...

    def add_periodic(self, name: str, interval_s: float, fn: Callable[[], Any]) -> None: ...


def _iso(t_s: float) -> str:
    return datetime.fromtimestamp(t_s, UTC).strftime("%Y-%m-%dT%H:%MZ")


@dataclass
class _Active:
    runner: JobRunner
    task: asyncio.Task[Any]
    scheduled_s: float


@dataclass
class _Planned:
    scheduled_s: float
    start_s: float


@dataclass
class CronJobs:
    controller: CronController
    app_dir: Path
    since_s: float
    """when scheduling began: a job never handled owes nothing from before"""
    runner_factory: Callable[[AppSpec], JobRunner] | None = None
    forecast_api: Callable[[SustainabilitySpec], Awaitable[tuple[list[float], list[float], str]]] = api_forecast
    """``intensity_api``'s forecast (a seam: tests pass a twin)"""
    active: dict[str, list[_Active]] = field(default_factory=dict)
    planned: dict[str, list[_Planned]] = field(default_factory=dict)
    loaded: bool = False
    ticked: bool = False

    def _spec(self) -> AppSpec | None:
        return self.controller.app_spec

    def _store(self, spec: AppSpec) -> JobRunStore:
        return JobRunStore(state_db_path(spec.state.url, self.app_dir))

    def _runner(self, spec: AppSpec) -> JobRunner:
        return self.runner_factory(spec) if self.runner_factory is not None else JobRunner(spec, self.app_dir)

    async def tick(self) -> None:
        spec = self._spec()
        if spec is None or getattr(self.controller, "stopping", False):
            return
        now_s = self.controller.clock.wall()
        if not self.loaded:  # plans a previous controller made and did not start
            self.loaded = True
            for name, scheduled_s, start_s in await asyncio.to_thread(self._store(spec).plans):
                self.planned.setdefault(name, []).append(_Planned(scheduled_s, start_s))
        first_tick, self.ticked = not self.ticked, True
        for name, job in sorted(spec.jobs.items()):
            if job.schedule is None:
                for plan in self.planned.pop(name, []):
                    await asyncio.to_thread(self._store(spec).drop_plan, name, plan.scheduled_s)
                continue
            try:
                await self._tick_job(spec, name, job, now_s, self.since_s if first_tick else now_s)
            except (LichenError, OSError, ValueError) as exc:
                log.warning("cron_tick_failed", job=name, error=str(exc))
        for name, runs in list(self.active.items()):
            self.active[name] = [r for r in runs if not r.task.done()]

    async def _tick_job(self, spec: AppSpec, name: str, job: JobSpec, now_s: float, seen_s: float) -> None:
        store = self._store(spec)
        for plan in [p for p in self.planned.get(name, []) if now_s >= p.start_s]:
            self.planned[name].remove(plan)
            await asyncio.to_thread(store.drop_plan, name, plan.scheduled_s)
            self._start(spec, name, job, plan.scheduled_s, f"planned at {_iso(plan.start_s)} for the low-carbon "
                        f"window (due {_iso(plan.scheduled_s)})")
        last_s = await asyncio.to_thread(store.last_scheduled, name)
        if last_s is None:  # first seen: a job owes nothing from before the scheduler started or it joined the spec
            await asyncio.to_thread(store.set_last_scheduled, name, seen_s)
            last_s = seen_s
        found = cron_schedules.due(job.schedule or "", last_s, self.since_s, now_s, job.starting_deadline_s)
        if found.scheduled_s is None:
            return
        await asyncio.to_thread(store.set_last_scheduled, name, found.scheduled_s)
        missed = f"; {found.missed} earlier time(s) missed and not run" if found.missed else ""
        if found.too_late:
            self.controller.event(name, "CronMissed", "StartingDeadlineExceeded",
                                  f"due {_iso(found.scheduled_s)}, past its starting deadline "
                                  f"({job.starting_deadline_s:g} s){missed}")
            return
        running = [r for r in self.active.get(name, []) if not r.task.done()]
        if (running or self.planned.get(name)) and job.concurrency_policy == "forbid":
            self.controller.event(name, "CronSkipped", "ConcurrencyForbid",
                                  f"due {_iso(found.scheduled_s)} while a run is still "
                                  f"{'active' if running else 'planned'} (concurrency_policy: forbid){missed}")
            return
        if job.concurrency_policy == "replace":
            for plan in self.planned.pop(name, []):
                await asyncio.to_thread(store.drop_plan, name, plan.scheduled_s)
                self.controller.event(name, "CronReplaced", "ConcurrencyReplace",
                                      f"the run due {_iso(plan.scheduled_s)}, planned for {_iso(plan.start_s)}, "
                                      f"gives way to the one due {_iso(found.scheduled_s)}")
            for active in running:
                active.runner.cancelled.set()
                self.controller.event(name, "CronReplaced", "ConcurrencyReplace",
                                      f"the run due {_iso(active.scheduled_s)} is stopped for the one due "
                                      f"{_iso(found.scheduled_s)}")
        if job.carbon_aware is not None:
            await self._plan(spec, store, name, job, found.scheduled_s, now_s, missed)
            return
        self._start(spec, name, job, found.scheduled_s, f"due {_iso(found.scheduled_s)}{missed}")

    async def _plan(self, spec: AppSpec, store: JobRunStore, name: str, job: JobSpec, scheduled_s: float,
                    now_s: float, missed: str) -> None:
        assert job.carbon_aware is not None
        history = await asyncio.to_thread(store.list, name, 50)
        durations = [r.duration_s for r in history if r.status == STATUS_SUCCEEDED
                     and r.duration_s is not None][:DURATION_RUNS]
        duration_s = statistics.median(durations) if durations else (job.timeout_s or DEFAULT_DURATION_S)
        deadline_s = job.carbon_aware.deadline - (now_s - scheduled_s)
        if deadline_s <= 0:
            self._start(spec, name, job, scheduled_s, f"due {_iso(scheduled_s)}{missed}; carbon-aware, but already "
                        "past its deadline: started at once")
            return
        forecast, source = await self._forecast(spec, now_s, deadline_s)
        if forecast is None:
            self._start(spec, name, job, scheduled_s, f"due {_iso(scheduled_s)}{missed}; carbon-aware, but {source}: "
                        "started at once")
            return
        latest_start_s = None if job.starting_deadline_s is None else scheduled_s + job.starting_deadline_s
        chosen = carbon_planning.plan(*forecast, now_s, duration_s, deadline_s,
                                      max_intensity=job.carbon_aware.max_intensity_g_per_kwh,
                                      latest_start_s=latest_start_s)
        why = f"{chosen.reason}; expected duration {duration_s / 60:.0f} min " \
              f"({'median of past runs' if durations else 'no successful run yet'}), forecast from {source}"
        if chosen.warning:
            why += f"; {chosen.warning}"
        if chosen.start_s <= now_s:
            self._start(spec, name, job, scheduled_s, f"due {_iso(scheduled_s)}{missed}; carbon-aware: {why}")
            return
        self.planned.setdefault(name, []).append(_Planned(scheduled_s, chosen.start_s))
        await asyncio.to_thread(store.add_plan, name, scheduled_s, chosen.start_s)
        mean = f", mean forecast {chosen.forecast_mean:.0f} g/kWh" if chosen.forecast_mean is not None else ""
        now_mean = f" against {chosen.forecast_now_mean:.0f} at once" if chosen.forecast_now_mean is not None else ""
        self.controller.event(name, "CronPlanned", "CarbonAware",
                              f"due {_iso(scheduled_s)}, starts {_iso(chosen.start_s)}{mean}{now_mean}: {why}{missed}")

    async def _forecast(self, spec: AppSpec, now_s: float,
                        deadline_s: float) -> tuple[tuple[list[float], list[float]] | None, str]:
        """The forecast to plan with and where it came from: a trace reaching the deadline, else the intensity
        API's forecast, else a forecast from the trace's history; None, saying why, when there is none."""
        covering, history, why = await asyncio.to_thread(self._trace_forecasts, spec, now_s, deadline_s)
        if covering is not None:
            return covering, why
        if spec.sustainability.intensity_api is not None:
            try:
                times, values, source = await self.forecast_api(spec.sustainability)
            except (IntensityApiError, LichenError) as exc:
                why = f"{why}; the intensity API's forecast failed ({exc})"
            else:
                if times and times[0] <= now_s + carbon_planning.HOUR_S:
                    return (times, values), f"{source}'s forecast"
                why = f"{why}; {source}'s forecast starts after now"
        return history, why

    def _trace_forecasts(self, spec: AppSpec, now_s: float, deadline_s: float
                         ) -> tuple[tuple[list[float], list[float]] | None, tuple[list[float], list[float]] | None, str]:
        """(the trace as a forecast when it reaches the deadline, a forecast from its history, where or why not)."""
        trace_path = spec.sustainability.intensity_trace
        if not trace_path:
            return None, None, "no sustainability.intensity_trace to forecast from"
        try:
            trace = read_trace(self.app_dir / trace_path)
        except (DataError, OSError) as exc:
            return None, None, f"the intensity trace cannot be read ({exc})"
        problem = trace.span_problem(now_s - HISTORY_S, now_s + deadline_s)
        if problem is not None:
            return None, None, f"{trace_path}: {problem}"
        times, values = list(trace.times_s), list(trace.values)
        if times and times[-1] >= now_s + deadline_s and times[0] <= now_s:
            return (times, values), None, f"{trace_path} (it reaches the deadline: read as a forecast)"
        try:
            return None, carbon_planning.forecast_from_history(times, values, now_s, deadline_s), \
                f"the history in {trace_path} before now"
        except ValueError as exc:
            return None, None, f"{trace_path} has no history to forecast from ({exc})"

    def _start(self, spec: AppSpec, name: str, job: JobSpec, scheduled_s: float, message: str) -> None:
        runner = self._runner(spec)
        pipeline_id = f"{PIPELINE_PREFIX}{name}-{datetime.fromtimestamp(scheduled_s, UTC):%Y%m%dT%H%M}"
        task = asyncio.create_task(self._run(runner, spec, name, job, pipeline_id))
        self.active.setdefault(name, []).append(_Active(runner, task, scheduled_s))
        self.controller.event(name, "CronStarted", "Scheduled", message)

    async def _run(self, runner: JobRunner, spec: AppSpec, name: str, job: JobSpec, pipeline_id: str) -> None:
        try:
            result = await asyncio.to_thread(runner.run, [name], pipeline_id=pipeline_id)
        except LichenError as exc:  # a secret missing, say: the run never started
            self.controller.event(name, "CronFailed", "NotStarted", str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - a scheduled run must never take the controller down
            log.exception("cron_run_failed", job=name)
            self.controller.event(name, "CronFailed", "Error", f"{type(exc).__name__}: {exc}")
            return
        run = result.runs[-1] if result.runs else None
        status = run.status if run is not None else "not run"
        self.controller.event(name, "CronFinished", status, f"{pipeline_id}: {status}"
                              + (f" (exit {run.exit_code})" if run is not None and run.exit_code else ""))
        with contextlib.suppress(LichenError, OSError):
            await asyncio.to_thread(self._store(spec).prune, name, PIPELINE_PREFIX, job.successful_runs_kept,
                                    job.failed_runs_kept)

    async def aclose(self) -> None:
        """Stop active runs as on Ctrl-C and wait for them."""
        tasks = []
        for runs in self.active.values():
            for active in runs:
                active.runner.cancelled.set()
                tasks.append(active.task)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


def attach_cron_jobs(controller: CronController, app_dir: Path, **seams: Any) -> CronJobs:
    """Run the scheduler as one of the controller's periodic tasks, every second."""
    scheduler = CronJobs(controller, app_dir, controller.clock.wall(), **seams)
    controller.add_periodic("cron jobs", 1.0, scheduler.tick)
    return scheduler
