"""Cron schedules with CronJob semantics (lichen.control.cron_schedules): next times, what is due, what was missed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lichen.control.cron_schedules import MAX_MISSED, due, next_fire_s


def t(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(("schedule", "after", "expected"), [
    ("0 3 * * *", "2026-12-04T05:37", "2026-12-05T03:00"),
    ("*/15 * * * *", "2026-12-04T05:45", "2026-12-04T06:00"),  # strictly after
    ("0 0 29 2 *", "2026-12-04T00:00", "2028-02-29T00:00"),  # the next leap day
    ("0 12 * * 1", "2026-12-04T05:37", "2026-12-07T12:00"),  # Monday
    ("30 6 1 * 5", "2026-12-04T05:37", "2026-12-04T06:30"),  # the 1st OR a Friday: Dec 4 is a Friday
    ("0 0 13 * 5", "2026-12-04T05:37", "2026-12-11T00:00"),  # Friday the 11th comes before the 13th
    ("0 9 * * 7", "2026-12-04T05:37", "2026-12-06T09:00"),  # 7 is Sunday too
    ("59 23 31 12 *", "2026-12-31T23:59", "2027-12-31T23:59"),
    ("0 0 1-31 * 1", "2026-12-04T05:37", "2026-12-05T00:00"),  # no "*": either field, so every day
    ("0 0 */2 * 1", "2026-12-04T05:37", "2026-12-07T00:00"),  # "*/2": the weekday decides (Monday)
])
def test_next_fire_follows_cron(schedule: str, after: str, expected: str) -> None:
    assert next_fire_s(schedule, t(after)) == t(expected)


def test_nothing_is_due_before_the_first_time_after_the_job_was_seen() -> None:
    found = due("0 * * * *", None, t("2026-12-04T05:01"), t("2026-12-04T05:59"))
    assert found.scheduled_s is None and found.next_s == t("2026-12-04T06:00")


def test_only_the_latest_missed_time_is_due_and_the_others_are_counted() -> None:
    found = due("0 * * * *", t("2026-12-04T01:00"), 0.0, t("2026-12-04T05:30"))
    assert found.scheduled_s == t("2026-12-04T05:00") and found.missed == 3 and not found.too_late
    assert found.next_s == t("2026-12-04T06:00")
    assert due("0 * * * *", t("2026-12-04T05:00"), 0.0, t("2026-12-04T05:30")).scheduled_s is None  # handled


def test_a_time_past_the_starting_deadline_is_too_late() -> None:
    late = due("0 * * * *", t("2026-12-04T04:00"), 0.0, t("2026-12-04T05:02"), starting_deadline_s=60)
    assert late.scheduled_s == t("2026-12-04T05:00") and late.too_late
    fresh = due("0 * * * *", t("2026-12-04T04:00"), 0.0, t("2026-12-04T05:00:30"), starting_deadline_s=60)
    assert fresh.scheduled_s == t("2026-12-04T05:00") and not fresh.too_late


def test_a_long_outage_counts_at_most_max_missed_and_still_finds_the_latest() -> None:
    found = due("* * * * *", t("2026-12-01T00:00"), 0.0, t("2026-12-04T05:30:10"))
    assert found.missed == MAX_MISSED and found.scheduled_s == t("2026-12-04T05:30")
