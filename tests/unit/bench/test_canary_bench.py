"""The pure helpers of bench/canary.py: what a phase's records and events come to, the Flagger model, and the
in-process false-abort count on bootstrapped windows."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))
import canary as bench  # noqa: E402


def records(start: float, n: int, rate: float, revision_of, status_of, latency_s: float = 0.006) -> list:
    """``n`` requests sent every 1/rate s from ``start``: (sent, latency, outcome, revision, lag)."""
    return [(start + i / rate, latency_s, status_of(i), revision_of(i), 0.0) for i in range(n)]


def test_an_aborted_bad_canary_is_timed_from_its_first_request() -> None:
    # 100 req/s for 10 s; from 3 s to 5.5 s every 10th request goes to the canary, which fails 3 in 10
    def revision(i: int) -> str:
        return "canary" if 300 <= i < 550 and i % 10 == 0 else "stable"

    def status(i: int) -> str:
        return "500" if revision(i) == "canary" and (i // 10) % 10 < 3 else "200"

    rows = records(1000.0, 1000, 100.0, revision, status)
    events = [{"at": 1002.5, "kind": "CanaryStarted", "reason": "", "message": "canary"},
              {"at": 1005.4, "kind": "CanaryAborted", "reason": "analysis", "message": "rolled back"}]
    f = bench.phase_figures(rows, "stable", events, up_at=1002.0, rate_per_s=100.0, slo_s=None)
    assert f["canary"] == "canary" and f["canary_requests"] == 25
    assert f["canary_failed"] == f["canary_errors"] == sum(1 for i in range(300, 550, 10) if (i // 10) % 10 < 3)
    assert f["verdict"] == "aborted" and f["decision_message"] == "rolled back"
    assert f["first_canary_to_decision_s"] == pytest.approx(2.4)
    assert f["first_canary_to_weight0_s"] == pytest.approx(2.4)  # the last canary request left at 1005.4
    assert f["up_to_first_canary_s"] == pytest.approx(1.0)
    assert f["failed_share_horizon"] == pytest.approx(f["canary_failed"] / 6000)
    assert f["failed_share_exposure"] == pytest.approx(f["canary_failed"] / 241)  # requests 300..540 sent meanwhile
    assert [t[1] for t in f["timeline"]] == ["CanaryStarted", "CanaryAborted"]


def test_a_slow_canary_fails_by_the_slo_and_a_promotion_has_no_weight_zero() -> None:
    slow = [(10.0 + i, 0.21, "200", "canary", 0.0) for i in range(5)]
    fast = [(10.5 + i, 0.006, "200", "stable", 0.0) for i in range(5)]
    events = [{"at": 20.0, "kind": "CanaryPromoted", "reason": "analysis", "message": "promoted"}]
    f = bench.phase_figures(slow + fast, "stable", events, up_at=9.0, rate_per_s=1.0, slo_s=bench.SLO_S)
    assert f["canary_failed"] == 5 and f["canary_errors"] == 0 and f["over_slo_all_revisions"] == 5
    assert f["verdict"] == "promoted" and f["promoted"] and f["first_canary_to_weight0_s"] is None
    assert f["first_canary_to_decision_s"] == pytest.approx(10.0)
    assert bench.phase_figures(slow, "stable", events, 9.0, 1.0, slo_s=None)["canary_failed"] == 0


def test_a_canary_that_never_answered_has_no_times() -> None:
    rows = records(0.0, 20, 1.0, lambda i: "stable", lambda i: "200")
    events = [{"at": 15.0, "kind": "CanaryPaused", "reason": "", "message": "paused after 6 inconclusive"}]
    f = bench.phase_figures(rows, "stable", events, up_at=2.0, rate_per_s=1.0, slo_s=None)
    assert f["canary"] is None and f["canary_requests"] == 0 and f["verdict"] == "paused"
    assert f["first_canary_to_decision_s"] is None and f["up_to_decision_s"] == pytest.approx(13.0)
    assert f["failed_share_exposure"] is None and not f["promoted"] and f["timeline_from"] == "`lichen up`"
    late = [*rows, (16.0, 0.006, "200", "canary", 0.0)]  # its first answer came after the pause: no time from it
    f = bench.phase_figures(late, "stable", events, up_at=2.0, rate_per_s=1.0, slo_s=None)
    assert f["canary_requests"] == 1 and f["first_canary_to_decision_s"] is None
    assert f["timeline"][0][0] == pytest.approx(13.0)


def test_flagger_rolls_back_after_interval_times_threshold_at_its_first_step() -> None:
    a = bench.flagger_model("a", 150.0, 6.0)
    assert a["default_s"] == 60.0 and a["docs_threshold_5_s"] == 300.0
    assert a["failed_share_horizon"] == pytest.approx(0.03)
    assert a["failed_requests_by_rollback"] == round(150 * 60 * 0.03)
    b = bench.flagger_model("b", 150.0, 212.0)  # p99 under its 500 ms example gate: never rolled back
    assert b["default_s"] is None and b["failed_share_horizon"] == pytest.approx(0.10)
    assert bench.flagger_model("b", 150.0, 700.0)["default_s"] == 60.0
    assert bench.flagger_model("c", 150.0, 6.0)["promote_s"] == 180.0


def test_window_bins_like_the_gateway() -> None:
    lat = np.array([0.004, 0.009, 0.2, 3.0])
    w = bench.window(lat, np.array([False, True, False, False]), np.array([0, 1, 2, 3, 3]))
    assert w.requests == 5 and w.errors == 1
    buckets = dict(w.latency_buckets)
    assert buckets[0.005] == 1 and buckets[0.01] == 2 and buckets[0.25] == 3 and buckets[5.0] == 5
    assert buckets[float("inf")] == 5


def test_identical_samples_are_promoted_and_too_few_requests_pause() -> None:
    rng = np.random.default_rng(0)
    lat = list(0.005 + rng.exponential(0.002, 3000))
    same = bench.false_aborts(lat, [False] * len(lat), rate_per_s=150.0, runs=30, seed=1)
    assert same["aborted"] == 0 and same["outcomes"].get("promoted") == 30
    assert same["median_promote_s"] == pytest.approx(6.0)  # one 2 s interval per step
    thin = bench.false_aborts(lat, [False] * len(lat), rate_per_s=1.0, runs=5, seed=1)
    assert thin["outcomes"] == {"paused": 5}  # too few requests: inconclusive, paused, never promoted
