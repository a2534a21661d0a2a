"""Scheduled jobs (lichen.runtime.cron_jobs) on a fake wall clock, running real job processes.

CronJob semantics: a due time starts a run recorded as ``cron-<job>-<time>``; forbid skips a time due while
a run is active, replace stops it; a time past its starting deadline is missed, not run; a restarted
scheduler runs only the latest missed time; old scheduled runs are pruned; a carbon-aware run waits for the
low-carbon window of the app's intensity trace and starts there.
"""

from __future__ import annotations

import asyncio
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from lichen.runtime.cron_jobs import CronJobs
from lichen.runtime.job_runs import JobRunStore, state_db_path
from lichen.spec.models import AppSpec
from lichen.testing.clocks import FakeClock

pytestmark = pytest.mark.slow

STEPS = """
import pathlib, sys, time

def touch(argv):
    with open("touched.txt", "a") as out:
        out.write("x\\n")

def sleepy(argv):
    time.sleep(float(argv[0]) if argv else 30)
"""


def t(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def make(tmp_path: Path, jobs: dict[str, Any], start: str, **sustainability: Any) -> tuple[CronJobs, Any, AppSpec]:
    (tmp_path / "steps.py").write_text(textwrap.dedent(STEPS))
    doc = {"app": "crontest", "jobs": jobs, **({"sustainability": sustainability} if sustainability else {})}
    (tmp_path / "lichen.yaml").write_text(yaml.safe_dump(doc))
    spec = AppSpec.model_validate(doc)
    clock = FakeClock(start=0.0, wall_offset=t(start))
    events: list[tuple[str, str, str, str]] = []
    controller = SimpleNamespace(clock=clock, app_spec=spec, add_periodic=lambda *a: None,
                                 event=lambda service, kind, reason="", message="", replica="":
                                 events.append((service, kind, reason, message)))
    controller.events = events
    return CronJobs(controller, tmp_path, clock.wall()), controller, spec


def at(controller: Any, text: str) -> None:
    controller.clock.advance(t(text) - controller.clock.wall())


async def settle(scheduler: CronJobs, name: str) -> None:
    await asyncio.gather(*[a.task for a in scheduler.active.get(name, [])])


def kinds(controller: Any) -> list[str]:
    return [e[1] for e in controller.events]


def runs(tmp_path: Path, spec: AppSpec, job: str) -> list:
    return JobRunStore(state_db_path(spec.state.url, tmp_path)).list(job)


async def running(tmp_path: Path, spec: AppSpec, job: str, timeout_s: float = 20.0) -> None:
    """Until a run of ``job`` is recorded as running (the scheduler's thread has started its process)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not any(r.status == "running" for r in runs(tmp_path, spec, job)):
        assert loop.time() < deadline, f"no run of {job} started"
        await asyncio.sleep(0.02)


def test_a_due_time_runs_forbid_skips_while_active_and_old_runs_are_pruned(tmp_path: Path) -> None:
    scheduler, controller, spec = make(tmp_path, {
        "touch": {"entrypoint": "steps:touch", "schedule": "*/5 * * * *", "successful_runs_kept": 2},
        "slow": {"entrypoint": "steps:sleepy", "args": ["30"], "schedule": "*/5 * * * *"}}, "2026-12-04T12:03")

    async def scenario() -> None:
        await scheduler.tick()
        assert controller.events == []  # nothing due before 12:05
        for minute in ("12:05:01", "12:10:01", "12:15:01"):
            at(controller, f"2026-12-04T{minute}")
            await scheduler.tick()
            await settle(scheduler, "touch")
        assert [e[1] for e in controller.events if e[0] == "slow"] == ["CronStarted", "CronSkipped", "CronSkipped"]
        skipped = next(e for e in controller.events if e[1] == "CronSkipped")
        assert "concurrency_policy: forbid" in skipped[3] and "due 2026-12-04T12:10Z" in skipped[3]
        await scheduler.aclose()  # stops the slow run as on Ctrl-C

    asyncio.run(scenario())
    assert (tmp_path / "touched.txt").read_text() == "x\n" * 3
    touched = runs(tmp_path, spec, "touch")
    assert [r.pipeline_id for r in touched] == ["cron-touch-20261204T1215", "cron-touch-20261204T1210"]  # 2 kept
    assert all(r.status == "succeeded" for r in touched) and all(Path(r.log_path).exists() for r in touched)
    assert [r.status for r in runs(tmp_path, spec, "slow")] == ["interrupted"]


def test_replace_stops_the_active_run_for_the_new_one(tmp_path: Path) -> None:
    scheduler, controller, spec = make(tmp_path, {
        "slow": {"entrypoint": "steps:sleepy", "args": ["30"], "schedule": "0 * * * *",
                 "concurrency_policy": "replace", "failed_runs_kept": 5}}, "2026-12-04T11:59")

    async def scenario() -> None:
        at(controller, "2026-12-04T12:00:01")
        await scheduler.tick()
        first = scheduler.active["slow"][0]
        await running(tmp_path, spec, "slow")  # the first run's process is up
        at(controller, "2026-12-04T13:00:01")
        await scheduler.tick()
        await asyncio.wait_for(first.task, 30)
        assert kinds(controller) == ["CronStarted", "CronReplaced", "CronStarted", "CronFinished"]
        await scheduler.aclose()

    asyncio.run(scenario())
    statuses = {r.pipeline_id: r.status for r in runs(tmp_path, spec, "slow")}
    assert statuses["cron-slow-20261204T1200"] == "interrupted"


def test_missed_times_after_downtime_run_once_or_are_missed_past_the_starting_deadline(tmp_path: Path) -> None:
    jobs = {"touch": {"entrypoint": "steps:touch", "schedule": "0 * * * *"},
            "strict": {"entrypoint": "steps:touch", "schedule": "0 * * * *", "starting_deadline_s": 60}}
    scheduler, controller, spec = make(tmp_path, jobs, "2026-12-04T11:59")

    async def first_life() -> None:
        at(controller, "2026-12-04T12:00:10")
        await scheduler.tick()
        await settle(scheduler, "touch")
        await settle(scheduler, "strict")

    asyncio.run(first_life())
    # the controller is down from 12:00 to 16:30; a new one starts with the same state store
    later, controller2, _ = make(tmp_path, jobs, "2026-12-04T16:30")

    async def second_life() -> None:
        await later.tick()
        await settle(later, "touch")

    asyncio.run(second_life())
    started = [e for e in controller2.events if e[1] == "CronStarted"]
    assert [e[0] for e in started] == ["touch"] and "due 2026-12-04T16:00Z; 3 earlier time(s) missed" in started[0][3]
    missed = [e for e in controller2.events if e[1] == "CronMissed"]
    assert [e[0] for e in missed] == ["strict"] and "past its starting deadline (60 s)" in missed[0][3]
    assert (tmp_path / "touched.txt").read_text() == "x\n" * 3  # 12:00 twice, then 16:00 once


def test_a_carbon_aware_run_waits_for_the_low_carbon_window_of_the_trace(tmp_path: Path) -> None:
    rows = ["datetime,carbon_intensity_g_per_kwh"]
    for hour in range(0, 48):  # high all day but a low valley from 15:00 to 17:00 on the 4th
        rows.append(f"2026-12-{4 + hour // 24:02d}T{hour % 24:02d}:00:00Z,{100 if hour in (15, 16, 17) else 400}")
    (tmp_path / "de.csv").write_text("\n".join(rows) + "\n")
    scheduler, controller, spec = make(tmp_path, {
        "train": {"entrypoint": "steps:touch", "schedule": "0 12 * * *", "timeout_s": 3600,
                  "carbon_aware": {"deadline": "8h"}}}, "2026-12-04T11:59", intensity_trace="de.csv")

    async def scenario() -> None:
        at(controller, "2026-12-04T12:00:05")
        await scheduler.tick()
        assert kinds(controller) == ["CronPlanned"]
        planned = controller.events[0][3]
        assert "starts 2026-12-04T15:00Z" in planned  # the earliest hour of the valley and "mean forecast 100 g/kWh" in planned
        assert "no successful run yet" in planned and "read as a forecast" in planned
        at(controller, "2026-12-04T14:59")
        await scheduler.tick()
        assert kinds(controller) == ["CronPlanned"]
        at(controller, "2026-12-04T15:00:01")
        await scheduler.tick()
        await settle(scheduler, "train")
        assert kinds(controller) == ["CronPlanned", "CronStarted", "CronFinished"]

    asyncio.run(scenario())
    assert [r.status for r in runs(tmp_path, spec, "train")] == ["succeeded"]


def _valley_trace(tmp_path: Path) -> None:
    rows = ["datetime,carbon_intensity_g_per_kwh"]
    for hour in range(0, 72):
        rows.append(f"2026-12-{4 + hour // 24:02d}T{hour % 24:02d}:00:00Z,{100 if hour % 24 in (15, 16, 17) else 400}")
    (tmp_path / "de.csv").write_text("\n".join(rows) + "\n")


def test_a_planned_run_survives_a_restart_and_forbid_skips_times_due_while_it_waits(tmp_path: Path) -> None:
    _valley_trace(tmp_path)
    job = {"entrypoint": "steps:touch", "schedule": "0 12,13 * * *", "timeout_s": 3600,
           "carbon_aware": {"deadline": "8h"}}
    scheduler, controller, spec = make(tmp_path, {"train": job}, "2026-12-04T11:59", intensity_trace="de.csv")

    async def first_life() -> None:
        await scheduler.tick()
        at(controller, "2026-12-04T12:00:05")
        await scheduler.tick()
        at(controller, "2026-12-04T13:00:05")
        await scheduler.tick()
        await scheduler.aclose()

    asyncio.run(first_life())
    assert kinds(controller) == ["CronPlanned", "CronSkipped"]
    assert "while a run is still planned" in controller.events[1][3]
    later, controller2, _ = make(tmp_path, {"train": job}, "2026-12-04T15:00:30", intensity_trace="de.csv")

    async def second_life() -> None:
        await later.tick()  # the plan the first controller made and did not start: started now
        await settle(later, "train")

    asyncio.run(second_life())
    assert kinds(controller2) == ["CronStarted", "CronFinished"] and "planned at 2026-12-04T15:00Z" in \
        controller2.events[0][3]
    assert [r.pipeline_id for r in runs(tmp_path, spec, "train")] == ["cron-train-20261204T1200"]


def test_a_job_added_to_a_running_scheduler_owes_nothing_from_before(tmp_path: Path) -> None:
    scheduler, controller, spec = make(tmp_path, {}, "2026-12-04T00:00")

    async def scenario() -> None:
        await scheduler.tick()
        at(controller, "2026-12-04T05:30")
        controller.app_spec = AppSpec.model_validate(
            {"app": "crontest", "jobs": {"touch": {"entrypoint": "steps:touch", "schedule": "0 3 * * *"}}})
        await scheduler.tick()  # 03:00 passed before the job existed: not run
        assert controller.events == []
        await scheduler.aclose()

    (tmp_path / "steps.py").write_text(textwrap.dedent(STEPS))
    asyncio.run(scenario())
    assert not (tmp_path / "touched.txt").exists()


def test_pruning_keeps_whole_scheduled_pipelines_and_never_touches_lichen_run_runs(tmp_path: Path) -> None:
    from lichen.runtime.job_runs import JobRun

    store = JobRunStore(tmp_path / "state.db")
    for i, (pipeline, status) in enumerate([("manual1", "failed"), ("cron-j-1", "failed"), ("cron-j-1", "failed"),
                                            ("cron-j-2", "succeeded"), ("cron-j-3", "failed"),
                                            ("cron-j-4", "succeeded"), ("manual2", "failed")]):
        run = JobRun(run_id=f"r{i}", pipeline_id=pipeline, job="j", started_at=1000.0 + i,
                     log_path=str(tmp_path / f"r{i}.log"))
        Path(run.log_path).write_text("log\n")
        store.start(run)
        run.status, run.ended_at = status, 1000.5 + i
        store.finish(run)
    dropped = store.prune("j", "cron-", keep_succeeded=1, keep_failed=1)
    assert sorted(dropped) == ["r1", "r2", "r3"]  # cron-j-1 (both attempts) and cron-j-2
    assert sorted(r.run_id for r in store.list("j")) == ["r0", "r4", "r5", "r6"]
    assert not (tmp_path / "r1.log").exists() and (tmp_path / "r0.log").exists()


def test_a_run_stopped_before_it_begins_finishes_cleanly(tmp_path: Path) -> None:
    scheduler, controller, spec = make(tmp_path, {"touch": {"entrypoint": "steps:touch", "schedule": "0 * * * *"}},
                                       "2026-12-04T11:59")

    async def scenario() -> None:
        await scheduler.tick()
        at(controller, "2026-12-04T12:00:05")
        await scheduler.tick()
        await scheduler.aclose()  # at once: the run's thread may not have begun the job yet

    asyncio.run(scenario())
    assert kinds(controller)[0] == "CronStarted" and "CronFailed" not in kinds(controller)


def test_a_trace_that_stops_at_now_is_forecast_from_its_history(tmp_path: Path) -> None:
    rows = ["datetime,carbon_intensity_g_per_kwh"]
    for hour in range(0, 10 * 24 + 13):  # ten days up to 2026-12-14T12:00, each with a low at 03:00
        day, h = divmod(hour, 24)
        rows.append(f"2026-12-{4 + day:02d}T{h:02d}:00:00Z,{100 if h == 3 else 400}")
    (tmp_path / "de.csv").write_text("\n".join(rows) + "\n")
    scheduler, controller, spec = make(tmp_path, {
        "train": {"entrypoint": "steps:touch", "schedule": "0 12 * * *", "timeout_s": 1800,
                  "carbon_aware": {"deadline": "18h"}}}, "2026-12-14T11:59", intensity_trace="de.csv")

    async def scenario() -> None:
        await scheduler.tick()
        at(controller, "2026-12-14T12:00:05")
        await scheduler.tick()
        await scheduler.aclose()

    asyncio.run(scenario())
    [planned] = controller.events
    assert planned[1] == "CronPlanned" and "the history in de.csv before now" in planned[3]
    assert "starts 2026-12-15T02:" in planned[3] or "starts 2026-12-15T03:00Z" in planned[3]  # the nightly low


def test_without_a_trace_the_intensity_apis_forecast_plans_the_start_and_a_failing_api_starts_at_once(
        tmp_path: Path) -> None:
    from lichen.green.intensity_apis import IntensityApiError

    jobs = {"train": {"entrypoint": "steps:touch", "schedule": "0 12 * * *", "timeout_s": 3600,
                      "carbon_aware": {"deadline": "10h"}}}
    api = {"provider": "carbon-aware-sdk", "url": "http://127.0.0.1:9", "zone": "eastus"}
    scheduler, controller, spec = make(tmp_path, jobs, "2026-12-04T11:59", intensity_api=api)
    asked = []

    async def forecast(sustainability: Any) -> tuple[list[float], list[float], str]:
        asked.append(sustainability.intensity_api.zone)
        times = [t("2026-12-04T12:00") + h * 3600 for h in range(24)]
        return times, [90.0 if h in (6, 7) else 380.0 for h in range(24)], "carbon-aware-sdk:eastus"

    scheduler.forecast_api = forecast

    async def scenario() -> None:
        at(controller, "2026-12-04T12:00:05")
        await scheduler.tick()
        await scheduler.aclose()

    asyncio.run(scenario())
    [planned] = controller.events
    assert asked == ["eastus"] and planned[1] == "CronPlanned"
    assert "starts 2026-12-04T18:00Z" in planned[3] and "carbon-aware-sdk:eastus's forecast" in planned[3]

    async def failing(sustainability: Any) -> tuple[list[float], list[float], str]:
        raise IntensityApiError("carbon-aware-sdk:eastus: GET /emissions/forecasts/current: HTTP 500: 'boom'")

    (tmp_path / "second").mkdir()
    scheduler, controller, spec = make(tmp_path / "second", jobs, "2026-12-04T11:59", intensity_api=api)
    scheduler.forecast_api = failing

    async def second() -> None:
        at(controller, "2026-12-04T12:00:05")
        await scheduler.tick()
        await settle(scheduler, "train")

    asyncio.run(second())
    assert kinds(controller) == ["CronStarted", "CronFinished"]
    assert "the intensity API's forecast failed" in controller.events[0][3] and "HTTP 500" in controller.events[0][3]
