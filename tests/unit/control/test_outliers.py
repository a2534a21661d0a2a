"""Outlier ejection with Envoy's semantics, on a fake clock."""

from __future__ import annotations

from lichen.control.outliers import OutlierPolicy, OutlierState, is_ejected, may_eject, record_failure, record_success

POLICY = OutlierPolicy(consecutive_failures=5, base_ejection_s=10.0, max_ejection_s=35.0, max_ejection_percent=50)


def fail(state: OutlierState, now: float, times: int, ejected_now: int = 0, total: int = 3) -> tuple[OutlierState, bool]:
    ejected = False
    for _ in range(times):
        state, just = record_failure(state, now, POLICY, ejected_now, total)
        ejected = ejected or just
    return state, ejected


def test_five_consecutive_failures_eject() -> None:
    state, ejected = fail(OutlierState(), 100.0, 4)
    assert not ejected and not is_ejected(state, 100.0)
    state, ejected = fail(state, 100.0, 1)
    assert ejected and is_ejected(state, 100.0)
    assert is_ejected(state, 109.9) and not is_ejected(state, 110.0)


def test_a_success_resets_the_streak() -> None:
    state, _ = fail(OutlierState(), 0.0, 4)
    state = record_success(state, 0.0, POLICY)
    state, ejected = fail(state, 0.0, 4)
    assert not ejected


def test_ejection_time_grows_with_each_ejection_and_is_capped() -> None:
    state, _ = fail(OutlierState(), 0.0, 5)
    assert state.ejected_until == 10.0
    state, _ = fail(state, 10.0, 5)
    assert state.ejected_until == 10.0 + 20.0
    state, _ = fail(state, 30.0, 5)
    assert state.ejected_until == 30.0 + 30.0
    state, _ = fail(state, 60.0, 5)
    assert state.ejected_until == 60.0 + 35.0  # capped at max_ejection_s


def test_long_health_forgets_past_ejections() -> None:
    state, _ = fail(OutlierState(), 0.0, 5)
    state = record_success(state, 11.0, POLICY)
    state = record_success(state, 50.0, POLICY)  # healthy for >= max_ejection_s since it came back at 10
    assert state.ejections == 0
    state, _ = fail(state, 50.0, 5)
    assert state.ejected_until == 60.0


def test_failures_while_ejected_do_not_extend_the_ejection() -> None:
    state, _ = fail(OutlierState(), 0.0, 5)
    again, ejected = fail(state, 5.0, 10)
    assert not ejected and again.ejected_until == 10.0


def test_max_ejection_percent_is_respected_but_one_host_may_always_go() -> None:
    assert may_eject(0, 3, 50) and not may_eject(1, 3, 50)
    assert may_eject(1, 4, 50) and not may_eject(2, 4, 50)
    assert may_eject(0, 1, 10)
    assert not may_eject(0, 3, 0)
    state, ejected = fail(OutlierState(), 0.0, 5, ejected_now=1, total=3)
    assert not ejected and not is_ejected(state, 0.0)
