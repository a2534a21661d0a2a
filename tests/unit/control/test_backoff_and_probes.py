"""CrashLoopBackOff schedule and probe verdicts, on plain numbers (no sleeps)."""

from __future__ import annotations

from lichen.control import backoff, probing
from lichen.control.probing import initial_state, next_probe_at, record_probe
from lichen.spec.models import ProbeSpec, RestartSpec
from lichen.testing import FakeClock


def test_first_restart_is_immediate_then_doubles_to_the_cap() -> None:
    spec = RestartSpec()
    delays = [backoff.restart_delay_s(n, spec) for n in range(1, 9)]
    assert delays == [0.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0]
    assert not backoff.in_crash_loop(1) and backoff.in_crash_loop(2)


def test_custom_schedule_and_reset_after_a_healthy_run() -> None:
    spec = RestartSpec(initial_backoff_s=0.5, max_backoff_s=2, reset_after_s=60)
    count = 0
    for ran_for in (1.0, 1.0, 1.0, 1.0):
        count = backoff.next_crash_count(count, ran_for, spec)
    assert count == 4 and backoff.restart_delay_s(count, spec) == 2.0
    assert backoff.next_crash_count(count, 61.0, spec) == 1
    assert backoff.restart_at(100.0, 3, spec) == 101.0


def test_readiness_needs_success_threshold_and_flips_after_failure_threshold() -> None:
    spec = ProbeSpec(period_s=1, timeout_s=0.5, failure_threshold=3, success_threshold=2)
    clock = FakeClock()
    state = initial_state("readiness")
    assert not state.passing
    state = record_probe(state, spec, "ok", clock.now())
    assert not state.passing
    state = record_probe(state, spec, "ok", clock.advance(1))
    assert state.passing
    for outcome in ("timeout", "failed"):
        state = record_probe(state, spec, outcome, clock.advance(1))
        assert state.passing
    state = record_probe(state, spec, "ok", clock.advance(1))  # resets the failure streak
    for _ in range(2):
        state = record_probe(state, spec, "refused", clock.advance(1))
    assert state.passing
    state = record_probe(state, spec, "timeout", clock.advance(1))
    assert not state.passing and state.failures == 3


def test_liveness_starts_passing_and_ignores_refusals_until_first_answer() -> None:
    spec = ProbeSpec(path="/healthz", period_s=1, timeout_s=0.5, failure_threshold=2)
    state = initial_state("liveness")
    assert state.passing
    for t in (0.0, 1.0, 2.0, 3.0):
        state = record_probe(state, spec, "refused", t)
    assert state.passing and state.failures == 0
    state = record_probe(state, spec, "ok", 4.0)
    state = record_probe(state, spec, "refused", 5.0)
    state = record_probe(state, spec, "timeout", 6.0)
    assert not state.passing


def test_probe_schedule_honours_initial_delay_period_and_startup_polling() -> None:
    spec = ProbeSpec(initial_delay_s=2, period_s=1)
    state = initial_state("readiness")
    assert next_probe_at(state, spec, 100.0) == 102.0
    state = record_probe(state, spec, "refused", 102.0)
    assert next_probe_at(state, spec, 100.0) == 102.0 + probing.STARTUP_POLL_S
    state = record_probe(state, spec, "ok", 102.1)
    assert next_probe_at(state, spec, 100.0) == 103.1
    liveness = record_probe(initial_state("liveness"), spec, "ok", 102.0)
    assert next_probe_at(liveness, spec, 100.0) == 103.0


def test_readiness_is_polled_fast_until_it_first_passes_also_while_setup_answers_503() -> None:
    spec = ProbeSpec(period_s=1, success_threshold=1)
    state = record_probe(initial_state("readiness"), spec, "failed", 100.5)  # listening, setup() still loading
    assert next_probe_at(state, spec, 100.0) == 100.5 + probing.STARTUP_POLL_S
    state = record_probe(state, spec, "ok", 100.6)
    assert state.passing and next_probe_at(state, spec, 100.0) == 101.6
    state = record_probe(state, spec, "failed", 101.6)
    state = record_probe(state, spec, "failed", 102.6)
    state = record_probe(state, spec, "failed", 103.6)
    assert not state.passing and next_probe_at(state, spec, 100.0) == 104.6  # once ready, the period applies
    three = ProbeSpec(period_s=1, success_threshold=3)
    first_ok = record_probe(record_probe(initial_state("readiness"), three, "failed", 100.5), three, "ok", 100.6)
    assert not first_ok.passing and next_probe_at(first_ok, three, 100.0) == 101.6  # thresholds span periods
    never = record_probe(initial_state("readiness"), spec, "failed", 100.0 + probing.STARTUP_WINDOW_S)
    assert next_probe_at(never, spec, 100.0) == 101.0 + probing.STARTUP_WINDOW_S  # a replica never ready: slow down


def test_worst_case_detection_matches_kubernetes_formula() -> None:
    assert probing.worst_case_detection_s(ProbeSpec(period_s=10, timeout_s=1, failure_threshold=3)) == 31.0
