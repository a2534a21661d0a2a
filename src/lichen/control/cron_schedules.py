"""When a scheduled job is due, with Kubernetes CronJob semantics, as pure functions of times in Unix seconds.

* :func:`next_fire_s` — the first minute strictly after a time that a five-field cron schedule names,
  in UTC (a CronJob's default time zone). Day of month and day of week follow cron: when both fields
  are written without ``*``, a day matching either is due; a ``*`` field leaves the other in charge.
* :func:`due` — at ``now_s``, the latest schedule time after the last one handled (or after ``since_s``,
  when the job was first seen, for a job never scheduled), how many were missed on the way (a controller
  that was down), and whether that latest one is past ``starting_deadline_s``. As the CronJob
  controller does, only the latest missed time runs; the earlier ones are counted, not run. Counting stops
  at 100, past which the CronJob controller refuses to catch up without a starting deadline.

The caller applies the concurrency policy (``forbid``: skip while a run is active; ``allow``;
``replace``: stop the active run first) and records the time it handled.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from lichen.spec.quantities import parse_cron

MAX_MISSED = 100
_SEARCH_DAYS = 4 * 366 + 1  # every cron schedule fires within four years (Feb 29 on a given weekday)


def next_fire_s(schedule: str, after_s: float) -> float:
    """The first schedule time strictly after ``after_s`` (UTC, whole minutes)."""
    minutes, hours, days, months, weekdays = parse_cron(schedule)
    fields = schedule.split()  # cron: a field written with "*" (even "*/2") leaves the other day field in charge
    any_day, any_weekday = fields[2].startswith("*"), fields[4].startswith("*")
    moment = datetime.fromtimestamp(after_s, UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    limit = moment + timedelta(days=_SEARCH_DAYS)
    while moment < limit:
        if moment.month not in months:
            year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
            moment = moment.replace(year=year, month=month, day=1, hour=0, minute=0)
            continue
        day_ok = moment.day in days
        weekday_ok = (moment.isoweekday() % 7) in weekdays  # cron: 0 is Sunday
        if not (day_ok and weekday_ok if any_day or any_weekday else day_ok or weekday_ok):
            moment = (moment + timedelta(days=1)).replace(hour=0, minute=0)
            continue
        if moment.hour not in hours:
            moment = (moment + timedelta(hours=1)).replace(minute=0)
            continue
        if moment.minute not in minutes:
            moment += timedelta(minutes=1)
            continue
        return moment.timestamp()
    raise ValueError(f"cron schedule {schedule!r} names no time in the next four years")


@dataclass(frozen=True)
class Due:
    scheduled_s: float | None
    """the latest schedule time to handle now; None: nothing is due"""
    missed: int
    """schedule times before it since the last handled one, not run (capped at ``MAX_MISSED``)"""
    too_late: bool
    """``scheduled_s`` is more than ``starting_deadline_s`` ago: record it as missed, do not start"""
    next_s: float
    """the next schedule time after ``now_s``"""


def due(schedule: str, last_s: float | None, since_s: float, now_s: float,
        starting_deadline_s: float | None = None) -> Due:
    """What is due at ``now_s`` (see the module docs)."""
    after = since_s if last_s is None else last_s
    latest: float | None = None
    count = 0
    moment = next_fire_s(schedule, after)
    while moment <= now_s:
        latest, count = moment, count + 1
        if count > MAX_MISSED:
            break
        moment = next_fire_s(schedule, moment)
    if latest is None:
        return Due(None, 0, False, moment)
    if count > MAX_MISSED:  # jump to the latest time itself, as the CronJob controller's catch-up does
        latest = _latest_at_or_before(schedule, now_s)
    too_late = starting_deadline_s is not None and now_s - latest > starting_deadline_s
    return Due(latest, min(count, MAX_MISSED + 1) - 1, too_late, next_fire_s(schedule, now_s))


def _latest_at_or_before(schedule: str, now_s: float) -> float:
    """The last schedule time at or before ``now_s``, searched back a day, a month, then a year at a time."""
    for span_s in (86400.0, 31 * 86400.0, 366 * 86400.0, 4 * 366 * 86400.0):
        moment, latest = next_fire_s(schedule, now_s - span_s), None
        while moment <= now_s:
            latest, moment = moment, next_fire_s(schedule, moment)
        if latest is not None:
            return latest
    raise ValueError(f"cron schedule {schedule!r} named no time before {now_s}")
