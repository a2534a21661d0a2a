"""Canary analysis (lichen.control.canary_analysis): the verdict on a canary against stable, and the rollout's steps."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import stats

from lichen.control.canary_analysis import (
    HISTORY_LIMIT,
    AnalysisSettings,
    CanaryState,
    QueryCheck,
    RevisionWindow,
    Verdict,
    abort,
    analyse,
    histogram_quantile,
    mann_whitney_greater,
    pause,
    promote,
    resume,
    step,
    wilson_lower,
)
from lichen.spec.loading import validate_spec
from lichen.spec.models import AnalysisSpec, QuerySpec

GATEWAY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
STEPS = [10, 50, 100]
DEFAULTS = AnalysisSettings()


def binned(latencies_s: np.ndarray) -> tuple[tuple[float, float], ...]:
    """Seconds as the gateway's cumulative histogram (a value counts in every bucket whose le it does not exceed)."""
    index = np.searchsorted(np.array(GATEWAY_BUCKETS), latencies_s, side="left")
    cumulative = np.cumsum(np.bincount(index, minlength=len(GATEWAY_BUCKETS) + 1))
    return tuple(zip((*GATEWAY_BUCKETS, math.inf), (float(c) for c in cumulative), strict=True))


def window(rng: np.random.Generator, n: int, error_ratio: float = 0.0, median_s: float = 0.05,
           extra_s: float = 0.0) -> RevisionWindow:
    latencies = rng.lognormal(math.log(median_s), 0.5, size=n) + extra_s
    return RevisionWindow(float(n), float(rng.binomial(n, error_ratio)) if error_ratio else 0.0, binned(latencies))


def fixed(n: int, errors: int, latency_s: float = 0.05) -> RevisionWindow:
    """n requests, all answered in one latency bucket."""
    return RevisionWindow(float(n), float(errors), binned(np.full(n, latency_s)))


# ---------------------------------------------------------------- analyse: errors


def test_a_canary_failing_30_percent_against_0_fails_with_the_numbers() -> None:
    verdict = analyse(fixed(100, 30), fixed(100, 0), DEFAULTS)
    assert verdict.kind == "fail"
    assert verdict.failed == ("error_ratio_vs_stable", "max_error_ratio")
    n = verdict.numbers
    assert (n["canary_requests"], n["canary_errors"], n["stable_requests"], n["stable_errors"]) == (100, 30, 100, 0)
    assert n["canary_error_ratio"] == 0.3 and n["stable_error_ratio"] == 0.0
    assert n["error_p_value"] is not None and n["error_p_value"] < 1e-9
    assert n["canary_error_ratio_lower"] is not None and 0.2 < n["canary_error_ratio_lower"] < 0.3
    assert n["canary_p95_ms"] == n["stable_p95_ms"] and n["failed_checks"] == 2
    assert verdict.reasons[0].startswith("canary error ratio 30.0 % vs stable 0.0 % (Fisher p=7.2e-11 < 0.02")
    assert "above max_error_ratio 1.0 %" in verdict.reasons[1]


def test_a_significant_but_tiny_error_increase_on_a_million_requests_passes() -> None:
    verdict = analyse(fixed(1_000_000, 1000), fixed(1_000_000, 500), DEFAULTS)
    assert verdict.numbers["error_p_value"] is not None and verdict.numbers["error_p_value"] < 1e-20
    assert verdict.kind == "pass", verdict.reasons
    assert any("within the 0.10 % margin" in r for r in verdict.reasons)
    # twice the margin above stable fails
    assert analyse(fixed(1_000_000, 2600), fixed(1_000_000, 500), DEFAULTS).failed == ("error_ratio_vs_stable",)


def test_the_absolute_error_bound_alone_and_its_wilson_lower_bound() -> None:
    # 3 % on both sides: no worse than stable, but above max_error_ratio 1 %
    verdict = analyse(fixed(2000, 60), fixed(2000, 60), DEFAULTS)
    assert verdict.kind == "fail" and verdict.failed == ("max_error_ratio",)
    # one error in 20 (5 %) is noise at 98 %, two (10 %) are not
    assert wilson_lower(1, 20, 0.98) < 0.01 < wilson_lower(2, 20, 0.98)
    assert analyse(fixed(20, 1), fixed(0, 0), DEFAULTS).kind == "pass"
    assert analyse(fixed(20, 2), fixed(0, 0), DEFAULTS).failed == ("max_error_ratio",)
    # the bound is the one-sided Wilson score interval: z at the confidence, not at (1 + confidence) / 2
    z = stats.norm.ppf(0.98)
    p, n = 0.3, 100
    expected = (p + z * z / (2 * n) - z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / (1 + z * z / n)
    assert wilson_lower(30, 100, 0.98) == pytest.approx(expected)


# ---------------------------------------------------------------- analyse: latency


def test_a_canary_200_ms_slower_fails_and_identical_distributions_pass() -> None:
    rng = np.random.default_rng(13)
    slow = analyse(window(rng, 500, extra_s=0.2), window(rng, 500), DEFAULTS)
    assert slow.kind == "fail" and slow.failed == ("latency_vs_stable",)
    n = slow.numbers
    assert n["canary_p95_ms"] is not None and n["stable_p95_ms"] is not None
    assert n["canary_p95_ms"] - n["stable_p95_ms"] > 150
    assert n["latency_p_value"] is not None and n["latency_p_value"] < 1e-12
    assert slow.reasons[0].startswith(f"canary p95 {n['canary_p95_ms']:.0f} ms vs stable {n['stable_p95_ms']:.0f} ms")

    same = analyse(window(rng, 500), window(rng, 500), DEFAULTS)
    assert same.kind == "pass" and same.failed == (), same.reasons
    assert same.numbers["latency_p_value"] is not None and same.numbers["latency_p_value"] > 0.02


def test_identical_revisions_fail_no_more_often_than_the_confidence_allows() -> None:
    rng = np.random.default_rng(2024)
    runs, fails, latency_significant, errors_significant = 200, 0, 0, 0
    for _ in range(runs):
        verdict = analyse(window(rng, 1000, error_ratio=0.005), window(rng, 1000, error_ratio=0.005), DEFAULTS)
        assert verdict.kind != "inconclusive"
        fails += verdict.kind == "fail"
        latency_significant += (verdict.numbers["latency_p_value"] or 1) < DEFAULTS.alpha
        errors_significant += (verdict.numbers["error_p_value"] or 1) < DEFAULTS.alpha
    allowed = DEFAULTS.alpha * runs + 6  # 2 % of 200 is 4 expected; the slack covers binomial spread
    print(f"\n{runs} identical-revision analyses: {fails} failed; Mann-Whitney significant {latency_significant}, "
          f"Fisher significant {errors_significant} (allowed {allowed:g} each)")
    assert fails <= allowed
    assert latency_significant <= allowed and errors_significant <= allowed


def test_u_from_bin_counts_is_scipys_mann_whitney_on_the_expanded_samples() -> None:
    rng = np.random.default_rng(7)
    canary, stable = window(rng, 3000, extra_s=0.01), window(rng, 2000)
    cum_c = np.array([c for _, c in canary.latency_buckets])
    cum_s = np.array([c for _, c in stable.latency_buckets])
    x_counts, y_counts = np.diff(cum_c, prepend=0.0), np.diff(cum_s, prepend=0.0)
    u, p = mann_whitney_greater(x_counts, y_counts)
    representative = np.arange(len(x_counts), dtype=float)  # only the order of the bins matters
    x = np.repeat(representative, x_counts.astype(int))
    y = np.repeat(representative, y_counts.astype(int))
    expected = stats.mannwhitneyu(x, y, alternative="greater", method="asymptotic")
    assert u == pytest.approx(expected.statistic) and p == pytest.approx(expected.pvalue, rel=1e-9)
    assert 0 < p < 1e-3


def test_p95_interpolates_within_buckets_like_histogram_quantile() -> None:
    les = np.array([0.1, 0.2, math.inf])
    assert histogram_quantile(0.95, les, np.array([50.0, 100.0, 100.0])) == pytest.approx(0.19)
    assert histogram_quantile(0.5, les, np.array([100.0, 100.0, 100.0])) == pytest.approx(0.05)  # 0 below first
    assert histogram_quantile(0.95, les, np.array([10.0, 20.0, 100.0])) == 0.2  # in +Inf: highest finite bound
    assert histogram_quantile(0.95, les, np.zeros(3)) is None


def test_the_absolute_p95_bound_alone() -> None:
    settings = AnalysisSettings(max_p95_ms=300)
    verdict = analyse(fixed(200, 0, latency_s=0.4), fixed(200, 0, latency_s=0.4), settings)
    assert verdict.kind == "fail" and verdict.failed == ("max_p95_ms",)
    assert "canary p95 488 ms is above max_p95_ms 300" in verdict.reasons  # 250 + 250 * 0.95
    assert analyse(fixed(200, 0, latency_s=0.2), fixed(200, 0, latency_s=0.2), settings).kind == "pass"


# ---------------------------------------------------------------- analyse: too little data, queries


def test_five_requests_are_inconclusive_never_a_pass() -> None:
    verdict = analyse(fixed(5, 0), fixed(500, 0), DEFAULTS)
    assert verdict.kind == "inconclusive" and verdict.failed == ()
    assert "answered 5 requests in the interval (< min_requests 20)" in verdict.reasons[0]
    assert verdict.numbers["canary_requests"] == 5
    # even with min_requests 0, no request at all is not a pass
    assert analyse(fixed(0, 0), fixed(500, 0), AnalysisSettings(min_requests=0)).kind == "inconclusive"
    # requests but an empty latency histogram: latency is inconclusive
    assert analyse(RevisionWindow(100, 0), fixed(100, 0), DEFAULTS).kind == "inconclusive"


def test_a_stable_revision_with_too_few_requests_leaves_the_absolute_bounds_alone() -> None:
    settings = AnalysisSettings(max_p95_ms=300)
    verdict = analyse(fixed(100, 0), fixed(3, 3, latency_s=0.001), settings)
    assert verdict.kind == "pass" and verdict.numbers["error_p_value"] is None
    assert verdict.numbers["latency_p_value"] is None
    assert any("stable revision answered 3 requests (< min_requests 20): compared with the absolute bounds only"
               in r for r in verdict.reasons)
    assert analyse(fixed(100, 30), fixed(0, 0), settings).failed == ("max_error_ratio",)
    assert analyse(fixed(100, 0, latency_s=0.4), fixed(0, 0), settings).failed == ("max_p95_ms",)


def test_query_checks_with_a_ratio_and_a_threshold() -> None:
    def verdict(*checks: QueryCheck) -> Verdict:
        return analyse(fixed(100, 0), fixed(100, 0), DEFAULTS, checks)

    cpu = QueryCheck("cpu", canary=3.0, stable=1.0, max_ratio=2.0)
    failed = verdict(cpu)
    assert failed.kind == "fail" and failed.failed == ("query:cpu",)
    assert "query cpu: canary 3 vs stable 1 = 3.00x, above max_ratio 2" in failed.reasons
    assert failed.numbers["query.cpu.ratio"] == 3.0
    assert verdict(QueryCheck("cpu", 1.5, 1.0, max_ratio=2.0)).kind == "pass"
    assert verdict(QueryCheck("mem", 900.0, None, max_value=512.0)).failed == ("query:mem",)
    assert verdict(QueryCheck("mem", 100.0, None, max_value=512.0)).kind == "pass"
    # stable 0: canary 0 is a ratio of 1, anything above is infinite
    assert verdict(QueryCheck("oom", 0.0, 0.0, max_ratio=1.5)).kind == "pass"
    assert verdict(QueryCheck("oom", 0.1, 0.0, max_ratio=1.5)).numbers["query.oom.ratio"] == math.inf
    # a missing value is inconclusive for that check
    assert verdict(QueryCheck("cpu", None, 1.0, max_ratio=2.0)).kind == "inconclusive"
    assert verdict(QueryCheck("cpu", 1.0, None, max_ratio=2.0)).kind == "inconclusive"
    assert verdict(QueryCheck("cpu", float("nan"), 1.0, max_ratio=2.0)).kind == "inconclusive"
    # a failure outranks another check's missing value
    assert verdict(cpu, QueryCheck("x", None, 1.0, max_ratio=2.0)).kind == "fail"
    spec = QuerySpec(name="cpu", query='rate(cpu{revision="$revision"}[1m])', max_ratio=2.0)
    assert QueryCheck.from_spec(spec, 3.0, 1.0) == cpu


# ---------------------------------------------------------------- step


PASS = Verdict("pass", ("all good",), {})
FAIL = Verdict("fail", ("canary error ratio 30.0 % vs stable 0.0 %",), {}, ("error_ratio_vs_stable",))
INCONCLUSIVE = Verdict("inconclusive", ("the canary answered 5 requests",), {})


def test_three_passes_advance_10_50_100_then_promote() -> None:
    state = CanaryState.begin(STEPS, now=0.0)
    assert state.weight == 10
    actions, weights = [], []
    for i in range(3):
        decision = step(state, PASS, DEFAULTS, STEPS, now=10.0 * (i + 1))
        state = decision.state
        actions.append(decision.action)
        weights.append(decision.weight)
    assert actions == ["advance", "advance", "promote"] and weights == [50, 100, 100]
    assert state.outcome == "promoted" and state.step_started_at == 20.0
    assert [(h.weight, h.kind) for h in state.history] == [(10, "pass"), (50, "pass"), (100, "pass")]
    assert step(state, PASS, DEFAULTS, STEPS, now=40.0).action == "hold"


def test_a_fail_aborts_at_the_default_failure_limit() -> None:
    decision = step(CanaryState.begin(STEPS, 0.0), FAIL, DEFAULTS, STEPS, 10.0)
    assert decision.action == "abort" and decision.weight == 0 and decision.state.outcome == "aborted"
    assert "canary error ratio 30.0 %" in decision.reason and "failure_limit 1" in decision.reason


def test_failure_limit_2_needs_two_consecutive_fails_and_a_pass_resets_the_count() -> None:
    settings = AnalysisSettings(failure_limit=2)
    state = CanaryState.begin(STEPS, 0.0)
    first = step(state, FAIL, settings, STEPS, 10.0)
    assert first.action == "extend" and first.weight == 10 and first.state.consecutive_failures == 1
    assert step(first.state, FAIL, settings, STEPS, 20.0).action == "abort"
    reset = step(first.state, PASS, settings, STEPS, 20.0)
    assert reset.action == "advance" and reset.state.consecutive_failures == 0
    assert step(reset.state, FAIL, settings, STEPS, 30.0).action == "extend"
    # an inconclusive analysis between two fails neither counts nor resets
    between = step(first.state, INCONCLUSIVE, settings, STEPS, 20.0)
    assert step(between.state, FAIL, settings, STEPS, 30.0).action == "abort"


def test_max_inconclusive_pauses_and_a_paused_rollout_never_promotes() -> None:
    settings = AnalysisSettings(max_inconclusive=3)
    state = CanaryState.begin([100], 0.0)
    decisions = []
    for i in range(3):
        decisions.append(step(state, INCONCLUSIVE, settings, [100], 10.0 * (i + 1)))
        state = decisions[-1].state
    assert [d.action for d in decisions] == ["extend", "extend", "pause"]
    assert state.paused and "3 inconclusive analyses at weight 100" in state.pause_reason
    for i in range(5):
        held = step(state, PASS, settings, [100], 100.0 + i)
        assert held.action == "hold" and held.state.outcome is None and held.weight == 100
        state = held.state
    assert [h.kind for h in state.history[-5:]] == ["pass"] * 5
    watched = step(state, FAIL, settings, [100], 150.0)  # a pause holds the weight; a failure still rolls back
    assert watched.action == "abort" and watched.weight == 0 and watched.state.outcome == "aborted"
    resumed = resume(state, 200.0)
    assert resumed.action == "extend" and not resumed.state.paused and resumed.state.inconclusive_in_step == 0
    assert step(resumed.state, PASS, settings, [100], 210.0).action == "promote"


def test_max_inconclusive_aborts_with_on_inconclusive_fail() -> None:
    settings = AnalysisSettings.from_spec(AnalysisSpec(max_inconclusive=2, on_inconclusive="fail"))
    state = step(CanaryState.begin(STEPS, 0.0), INCONCLUSIVE, settings, STEPS, 10.0).state
    decision = step(state, INCONCLUSIVE, settings, STEPS, 20.0)
    assert decision.action == "abort" and decision.weight == 0 and "2 inconclusive analyses" in decision.reason


def test_manual_promote_abort_pause_and_resume() -> None:
    state = CanaryState.begin(STEPS, 0.0)
    paused = pause(state, 5.0)
    assert paused.action == "pause" and paused.state.paused and paused.weight == 10
    assert pause(paused.state, 6.0).action == "hold"
    assert resume(state, 6.0).action == "hold"
    promoted = promote(paused.state, 7.0)
    assert promoted.action == "promote" and promoted.weight == 100 and promoted.state.outcome == "promoted"
    aborted = abort(state, "the on-call said so", 8.0)
    assert aborted.action == "abort" and aborted.weight == 0 and "the on-call said so" in aborted.reason
    assert promote(aborted.state, 9.0).action == "hold" and abort(promoted.state, "late", 9.0).action == "hold"
    assert [h.kind for h in promoted.state.history] == ["pause", "promote"]


def test_passes_per_step_counts_passes_in_a_step() -> None:
    settings = AnalysisSettings(passes_per_step=2)
    first = step(CanaryState.begin(STEPS, 0.0), PASS, settings, STEPS, 10.0)
    assert first.action == "extend" and first.state.passed_in_step == 1
    second = step(first.state, PASS, settings, STEPS, 20.0)
    assert second.action == "advance" and second.weight == 50 and second.state.passed_in_step == 0


def test_state_round_trips_through_json_and_keeps_the_last_history() -> None:
    state = CanaryState.begin(STEPS, 0.0)
    state = step(state, FAIL, AnalysisSettings(failure_limit=3), STEPS, 1.0).state
    state = pause(state, 2.0, "looking at the dashboard").state
    for i in range(HISTORY_LIMIT + 10):
        state = step(state, INCONCLUSIVE, DEFAULTS, STEPS, 3.0 + i).state
    assert len(state.history) == HISTORY_LIMIT and state.history[-1].at == 3.0 + HISTORY_LIMIT + 9
    again = CanaryState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert again == state and again.paused and again.consecutive_failures == 1
    with pytest.raises(ValueError):
        CanaryState.begin([50, 10, 100], 0.0)


# ---------------------------------------------------------------- spec


def test_settings_from_the_spec_and_the_query_spec_needs_a_bound(tmp_path: Path) -> None:
    spec = AnalysisSpec(confidence=0.95, latency_margin_ms=10, max_inconclusive=3, on_inconclusive="fail",
                        queries=[QuerySpec(name="cpu", query="x", max_value=2)])
    settings = AnalysisSettings.from_spec(spec)
    assert (settings.confidence, settings.latency_margin_ms, settings.max_inconclusive, settings.on_inconclusive,
            settings.alpha, settings.passes_per_step) == (0.95, 10, 3, "fail", 0.05, 1)
    assert AnalysisSettings.from_spec(AnalysisSpec()) == DEFAULTS
    with pytest.raises(ValidationError, match="max_ratio: a query needs max_ratio, max_value or both"):
        QuerySpec(name="cpu", query="x")
    with pytest.raises(ValidationError):
        AnalysisSpec(confidence=0.5)
    head = "app: shop\nservices:\n  api:\n    entrypoint: shopsvc:Api\n    rollout:\n      strategy: canary\n"
    path = tmp_path / "lichen.yaml"
    path.write_text(head + "      analysis:\n        queries:\n          - name: cpu\n            query: up\n")
    assert [str(i).split(" ", 1)[1] for i in validate_spec(path, check_imports=False)] == [
        "services.api.rollout.analysis.queries[0].max_ratio: a query needs max_ratio, max_value or both"]
    assert str(validate_spec(path, check_imports=False)[0]).startswith(f"{path}:9:")
    twice = "          - {name: cpu, query: up, max_value: 1}\n"
    path.write_text(head + "      analysis:\n        queries:\n" + twice + twice)
    issues = [str(i) for i in validate_spec(path, check_imports=False)]
    assert len(issues) == 1 and f"{path}:8:" in issues[0], issues
    assert "queries: query names must be unique; 'cpu' appears twice" in issues[0]


def test_the_applied_share_follows_the_steps_ready_replicas() -> None:
    from lichen.control.canary_analysis import applied_share

    assert applied_share(50, 1, 4) == 12.5 and applied_share(50, 4, 4) == 50 and applied_share(50, 9, 4) == 50
    assert applied_share(10, 0, 1) == 0
