"""Chaos measurements from plain observations: detection, recovery windows, failures, and hypothesis verdicts."""

from __future__ import annotations

import pytest

from lichen.control.chaos_verdicts import FaultOutcome, detected_after, failed_between, judge, recovered_after
from lichen.spec.experiments import parse_hypothesis


def _samples(bad_from: float, bad_to: float, end: float = 10.0, step: float = 0.1) -> list[tuple[float, bool]]:
    return [(round(i * step, 3), not (bad_from <= i * step < bad_to)) for i in range(int(end / step))]


def test_detection_is_the_first_report_at_or_after_the_injection() -> None:
    assert detected_after(2.0, [1.0, 2.4, 3.0]) == pytest.approx(0.4)
    assert detected_after(2.0, [1.0]) is None


def test_recovery_waits_for_health_after_detection_and_for_the_last_failure() -> None:
    healthy = _samples(2.2, 4.0)
    assert recovered_after(2.0, healthy, [], 0.2, float("inf")) == pytest.approx(2.0)  # healthy again at 4.0
    assert recovered_after(2.0, healthy, [2.1, 5.5], 0.2, float("inf")) == pytest.approx(3.5)  # a failure at 5.5
    assert recovered_after(2.0, _samples(2.2, 99.0), [], 0.2, float("inf")) is None  # never healthy again


def test_recovery_is_judged_within_the_window_before_the_next_fault() -> None:
    healthy = [*_samples(2.2, 3.0, end=5.0), *[(5.0 + i * 0.1, i > 30) for i in range(50)]]
    assert recovered_after(2.0, healthy, [], 0.2, 5.0) == pytest.approx(1.0)  # the next fault's trouble is its own
    assert recovered_after(2.0, _samples(2.2, 6.0), [], 0.2, 5.0) is None  # still down when the next one struck


def test_health_before_detection_does_not_count_as_recovery() -> None:
    healthy = _samples(3.0, 4.0)  # looked healthy until the controller noticed at 3.0
    assert recovered_after(2.0, healthy, [], 1.0, float("inf")) == pytest.approx(2.0)


def test_failures_are_counted_from_injection_to_the_end_of_the_window() -> None:
    assert failed_between([1.0, 2.0, 2.5, 4.0, 6.0], 2.0, 4.0) == 3


def test_hypotheses_hold_or_fail_on_what_was_measured() -> None:
    outcomes = [FaultOutcome("kill_replica", "a", 2.0, 0.1, 1.5, 0), FaultOutcome("kill_gateway", "gateway", 5.0,
                                                                                   0.2, 0.8, 3)]
    verdicts = judge([parse_hypothesis(t) for t in ("p99 < 200ms", "errors < 0.1%", "recovered within 1s",
                                                       "detected within 300 ms", "failed requests == 0",
                                                       "no orphaned processes")],
                     {"p99": 0.15}, error_ratio=0.002, failed=3, outcomes=outcomes, orphans=0)
    assert [(v["hypothesis"], v["held"]) for v in verdicts] == [
        ("p99 < 200ms", True), ("errors < 0.1%", False), ("recovered within 1s", False),
        ("detected within 300 ms", True), ("failed requests == 0", False), ("no orphaned processes", True)]
    assert verdicts[2]["measured"] == "1.50 s" and verdicts[1]["measured"] == "0.200 %"
    never = judge([parse_hypothesis("recovered within 60s")], {}, 0.0, 0,
                  [FaultOutcome("kill_replica", "a", 2.0, 0.1, None, 0)], 0)
    assert never[0]["held"] is False and never[0]["measured"] == "not recovered by the end"


@pytest.mark.parametrize("text", ["p99 < fast", "no notification kept", "errors < 1", "recovered in 5s", "",
                                  "notifications lost == some"])
def test_hypotheses_that_cannot_be_evaluated_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="cannot evaluate"):
        parse_hypothesis(text)


def test_the_example_experiments_check_against_their_apps() -> None:
    """Every experiment shipped under examples/*/experiments loads against its app, so the documented command runs."""
    from pathlib import Path

    from lichen.spec.experiments import load_experiment
    from lichen.spec.loading import load_spec

    root = Path(__file__).resolve().parents[3] / "examples"
    found = sorted(root.glob("*/experiments/*.yaml"))
    assert found, "no example experiment"
    for path in found:
        experiment = load_experiment(path, load_spec(path.parents[1] / "lichen.yaml"))
        assert experiment.faults and experiment.parsed_hypotheses()


def test_full_strength_needs_every_replica_ready_no_rollout_running_and_the_gateway_up() -> None:
    from lichen.control.chaos_verdicts import at_full_strength

    service = {"ready": 2, "desired": 2, "rollout": {"status": "complete"}}
    assert at_full_strength({"services": {"web": service}, "gateway": {"state": "Ready"}})
    assert not at_full_strength({"services": {"web": {**service, "ready": 1}}, "gateway": {"state": "Ready"}})
    assert not at_full_strength({"services": {"web": {**service, "rollout": {"status": "progressing"}}}})
    assert not at_full_strength({"services": {"web": service}, "gateway": {"state": "Exited"}})


def _note(receiver: str, outcome: str, status: str = "firing") -> dict:
    return {"id": 1, "receiver": receiver, "status": status, "attempts": 3, "outcome": outcome,
            "last_error": "ConnectError" if outcome != "delivered" else None, "created_at": 10.0}


def test_notifications_given_up_or_still_pending_are_lost_and_the_hypothesis_fails() -> None:
    from lichen.control.chaos_verdicts import notification_tally

    tally = notification_tally([_note("hook", "delivered"), _note("hook", "pending"), _note("am", "superseded"),
                                _note("hook", "failed", "resolved")])
    assert (tally["created"], tally["delivered"], tally["superseded"], tally["lost"]) == (4, 1, 1, 2)
    assert [i["outcome"] for i in tally["lost_items"]] == ["pending", "failed"]
    hypotheses = [parse_hypothesis(t) for t in ("no notification lost", "notifications lost <= 2")]
    assert [(v["held"], v["measured"]) for v in judge(hypotheses, {}, 0.0, 0, [], 0, notifications_lost=2)] == [
        (False, "2 lost"), (True, "2 lost")]
    assert judge(hypotheses[:1], {}, 0.0, 0, [], 0, notifications_lost=0)[0]["held"] is True
    unread = judge(hypotheses[:1], {}, 0.0, 0, [], 0, notifications_lost=None)[0]
    assert unread == {"hypothesis": "no notification lost", "held": False, "measured": "the outbox could not be read"}


def test_a_receiver_has_drained_when_it_is_not_held_down_and_nothing_waits_for_it() -> None:
    from lichen.control.chaos_verdicts import outbox_drained

    outbox = {"receivers": ["hook", "log-1"], "down_until": {}, "notifications": [_note("hook", "delivered")]}
    assert outbox_drained(outbox) == {"hook": True, "log-1": True}
    assert outbox_drained({**outbox, "down_until": {"hook": 99.0}}) == {"hook": False, "log-1": True}
    assert outbox_drained({**outbox, "notifications": [_note("log-1", "pending")]}) == {"hook": True, "log-1": False}


def test_a_receiver_down_counts_as_recovered_only_once_its_outbox_drained() -> None:
    drained = [(t / 10, not 20 <= t < 75) for t in range(100)]  # held down from 2.0 s, drained at 7.5 s
    assert recovered_after(2.0, drained, [], None, float("inf")) == pytest.approx(5.5)
    assert recovered_after(2.0, [(t / 10, t < 20) for t in range(100)], [], None, float("inf")) is None
