"""Canary analysis: is the new revision worse than the stable one, and what does the rollout do next.

A pure module: plain data in, a decision with its numbers out; no I/O and no clock (``now`` is a parameter).
The shell measures both revisions **over the same interval** (the gateway's
``lichen_gateway_requests_total{service,revision,status}`` and
``lichen_gateway_request_duration_seconds_bucket{service,revision,le}`` increases, and the spec's extra
queries), calls :func:`analyse` once per ``interval_s``, feeds the :class:`Verdict` to :func:`step`, and
applies the weight it returns.

**analyse** compares canary and stable, Kayenta-style: one-sided tests that the canary is *worse*, each at
``confidence`` (default 0.98, Kayenta's Mann-Whitney classifier default), plus an effect size so that a
real but harmless difference does not roll back:

* errors: Fisher's exact test (``alternative="greater"``) on the 2x2 table of errors and successes. It is
  exact at the small counts a 10 % step sees in one interval (20-100 requests), where a z-test's normal
  approximation is poor, and scipy computes the one-sided p-value from one hypergeometric survival
  function, in constant time even at millions of requests, so there is no reason to switch to a z-test.
  It fails when significant **and** the canary's ratio exceeds stable's by more than a margin of a tenth
  of ``max_error_ratio`` (0.1 percentage point at the default 1 %: 0.1 % vs 0.05 % on a million requests
  is significant but passes). Separately the canary fails the absolute bound when the lower end of its
  one-sided Wilson interval at ``confidence`` exceeds ``max_error_ratio``: 2 errors in 20 (10 %) fail a
  1 % bound, 1 in 20 does not (the ratio alone, 5 %, would abort a healthy canary on one unlucky error);
* latency: the Mann-Whitney U test (``alternative="greater"``) on the binned latencies. Every request in
  one bucket is a tie, so U and its tie-corrected normal approximation (exactly what
  ``scipy.stats.mannwhitneyu(..., method="asymptotic")`` computes on the expanded samples; a test checks
  they agree) are computed from the bucket counts directly: O(buckets), not O(requests). It fails when
  significant **and** the canary's p95 (interpolated within buckets like Prometheus' histogram_quantile)
  exceeds stable's by more than ``latency_margin_ms`` (25 ms), or when the canary's p95 exceeds
  ``max_p95_ms``;
* extra queries (:class:`QueryCheck`, values evaluated by the shell): canary / stable above ``max_ratio``
  (stable 0: canary 0 is a ratio of 1, canary above 0 is infinite) or canary above ``max_value``.

Too little data is never a pass. A canary with fewer than ``min_requests`` (20) requests in the interval
is **inconclusive**, and so is a check without its data (an empty canary histogram, a query without a
value). A stable revision with fewer than ``min_requests`` (at weight 100 it serves nothing) cannot be
compared against: the absolute bounds alone decide, and a reason says so.

**step** walks the weights ``steps`` (e.g. [10, 50, 100]) one analysis per interval, Flagger-style: a pass
advances (``passes_per_step`` passes, default 1, as Flagger advances on each successful analysis), and a
pass at the last step promotes; ``failure_limit`` consecutive failed analyses (Flagger's
``analysis.threshold``; default 1: a clearly worse canary rolls back after one interval) abort; only a
pass resets that count. An inconclusive analysis extends the step; ``max_inconclusive`` (6, one minute at
10 s) of them in one step pause the rollout (``on_inconclusive: pause``, a person decides) or abort it
(``fail``); an inconclusive analysis neither counts as a failure nor resets the count. A paused rollout
records verdicts and changes nothing until :func:`resume`; :func:`promote`, :func:`abort`, :func:`pause`
and :func:`resume` are the manual actions. The weight is the canary's traffic share: 0 once aborted.

Other defaults: ``max_error_ratio`` 1 % is Flagger's usual request-success-rate gate (99 %); the margins
play the part of Kayenta's effect-size tolerance (a difference nobody would notice is not a regression).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

import numpy as np

from lichen.spec.models import AnalysisSpec, QuerySpec

VerdictKind = Literal["pass", "fail", "inconclusive"]
Action = Literal["advance", "extend", "promote", "abort", "pause", "hold"]
def _stats() -> Any:
    """scipy.stats, imported at the first analysis: 0.6 s that a controller without a canary never pays."""
    from scipy import stats

    return stats


HISTORY_LIMIT = 50  # history records kept in a CanaryState
ERROR_MARGIN_SHARE = 0.1  # a significant error increase fails only above this share of max_error_ratio
QUANTILE = 0.95


@dataclass(frozen=True)
class AnalysisSettings:
    """What the analysis reads of ``services.<name>.rollout.analysis`` (``passes_per_step`` is not in the spec)."""

    max_error_ratio: float = 0.01
    max_p95_ms: float | None = None
    interval_s: float = 10.0
    min_requests: int = 20
    failure_limit: int = 1
    confidence: float = 0.98
    latency_margin_ms: float = 25.0
    max_inconclusive: int = 6
    on_inconclusive: Literal["pause", "fail"] = "pause"
    passes_per_step: int = 1

    @classmethod
    def from_spec(cls, spec: AnalysisSpec) -> AnalysisSettings:
        return cls(**{f.name: getattr(spec, f.name) for f in fields(cls) if f.name in AnalysisSpec.model_fields})

    @property
    def alpha(self) -> float:
        return round(1 - self.confidence, 12)

    @property
    def error_margin(self) -> float:
        return self.max_error_ratio * ERROR_MARGIN_SHARE

    @property
    def enough(self) -> int:  # requests a side needs to be judged: at least 1, whatever min_requests says
        return max(self.min_requests, 1)


@dataclass(frozen=True)
class RevisionWindow:
    """One revision's increases over the analysis interval."""

    requests: float
    errors: float
    latency_buckets: tuple[tuple[float, float], ...] = ()
    """cumulative (upper bound in seconds, count) pairs ending with (inf, total), Prometheus-style"""


@dataclass(frozen=True)
class QueryCheck:
    name: str
    canary: float | None
    stable: float | None
    max_ratio: float | None = None
    max_value: float | None = None

    @classmethod
    def from_spec(cls, spec: QuerySpec, canary: float | None, stable: float | None) -> QueryCheck:
        return cls(spec.name, canary, stable, spec.max_ratio, spec.max_value)


@dataclass(frozen=True)
class Verdict:
    kind: VerdictKind
    reasons: tuple[str, ...]
    """failures first, then what was inconclusive, then notes, then what passed"""
    numbers: dict[str, float | int | None]
    failed: tuple[str, ...] = ()
    """the checks that failed: error_ratio_vs_stable, max_error_ratio, latency_vs_stable, max_p95_ms, query:<name>"""


def _pct(ratio: float) -> str:
    return f"{100 * ratio:.1f} %" if ratio == 0 or ratio >= 0.01 else f"{100 * ratio:.2f} %"


def _p(value: float) -> str:
    return "<1e-300" if value <= 0 else f"={value:.2g}"


def _whole(value: float | None) -> int:
    return 0 if value is None or not math.isfinite(value) else max(0, round(value))


def _finite(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def wilson_lower(errors: int, n: int, confidence: float) -> float:
    """The lower end of the one-sided Wilson score interval of ``errors / n`` at ``confidence``."""
    if n <= 0:
        return 0.0
    z = float(_stats().norm.ppf(confidence))
    ratio = errors / n
    centre = ratio + z * z / (2 * n)
    spread = z * math.sqrt(ratio * (1 - ratio) / n + z * z / (4 * n * n))
    return max(0.0, (centre - spread) / (1 + z * z / n))


def _histogram(buckets: Sequence[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """(upper bounds, cumulative counts), sorted, counts made whole and non-decreasing (a reset can break them)."""
    if not buckets:
        return np.array([math.inf]), np.array([0.0])
    pairs = sorted((float(le), float(count)) for le, count in buckets)
    counts = np.maximum.accumulate(np.maximum(np.array([c for _, c in pairs]), 0.0))
    return np.array([le for le, _ in pairs]), np.rint(counts)


def common_histograms(canary: Sequence[tuple[float, float]], stable: Sequence[tuple[float, float]]
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bounds, canary cumulative, stable cumulative) on the bounds both write (the cumulative counts there are
    exact for both; the gateway writes the same bounds for every revision)."""
    (les_c, cum_c), (les_s, cum_s) = _histogram(canary), _histogram(stable)
    les = np.intersect1d(les_c, les_s)
    return les, cum_c[np.searchsorted(les_c, les)], cum_s[np.searchsorted(les_s, les)]


def histogram_quantile(q: float, les: np.ndarray, cumulative: np.ndarray) -> float | None:
    """Prometheus' histogram_quantile: linear within the bucket holding rank ``q * total``, 0 the first bucket's
    lower end, the highest finite bound when the rank falls in +Inf; None for an empty histogram."""
    if len(cumulative) == 0 or cumulative[-1] <= 0:
        return None
    rank = q * float(cumulative[-1])
    i = min(int(np.searchsorted(cumulative, rank, side="left")), len(les) - 1)
    if math.isinf(les[i]):
        return float(les[i - 1]) if i > 0 else None
    lower, before = (float(les[i - 1]), float(cumulative[i - 1])) if i > 0 else (0.0, 0.0)
    return lower + (float(les[i]) - lower) * (rank - before) / (float(cumulative[i]) - before)


def mann_whitney_greater(x_counts: np.ndarray, y_counts: np.ndarray) -> tuple[float, float]:
    """U of x over y and the one-sided p-value that x is stochastically greater, from per-bin counts of the same
    ordered bins: the tie-corrected normal approximation with continuity correction, as scipy's
    ``mannwhitneyu(x, y, alternative="greater", method="asymptotic")`` on the expanded samples."""
    x, y = np.asarray(x_counts, dtype=float), np.asarray(y_counts, dtype=float)
    n1, n2 = float(x.sum()), float(y.sum())
    n = n1 + n2
    if n1 <= 0 or n2 <= 0 or n < 2:
        return 0.0, 1.0
    below = np.cumsum(y) - y
    u = float(np.sum(x * (below + 0.5 * y)))
    ties = x + y
    variance = n1 * n2 / 12 * ((n + 1) - float(np.sum(ties**3 - ties)) / (n * (n - 1)))
    if variance <= 0:
        return u, 1.0
    return u, float(_stats().norm.sf((u - n1 * n2 / 2 - 0.5) / math.sqrt(variance)))


@dataclass
class _Findings:
    failed: list[tuple[str, str]]
    inconclusive: list[str]
    notes: list[str]
    passed: list[str]


def _errors(n_c: int, e_c: int, n_s: int, e_s: int, compare: bool, settings: AnalysisSettings,
            out: _Findings, numbers: dict[str, float | int | None]) -> None:
    r_c = e_c / n_c
    alpha = settings.alpha
    if compare:
        r_s = e_s / n_s
        p = float(_stats().fisher_exact([[e_c, n_c - e_c], [e_s, n_s - e_s]], alternative="greater").pvalue)
        numbers["error_p_value"] = p
        text = f"canary error ratio {_pct(r_c)} vs stable {_pct(r_s)} (Fisher p{_p(p)}"
        if p < alpha and r_c - r_s > settings.error_margin:
            out.failed.append(("error_ratio_vs_stable",
                               f"{text} < {alpha:g}, more than the {_pct(settings.error_margin)} margin)"))
        elif p < alpha:
            out.passed.append(f"{text} < {alpha:g}, but within the {_pct(settings.error_margin)} margin)")
        else:
            out.passed.append(f"{text} ≥ {alpha:g}: not significantly higher)")
    lower = wilson_lower(e_c, n_c, settings.confidence)
    numbers["canary_error_ratio_lower"] = lower
    bound = (f"canary error ratio {_pct(r_c)} ({e_c} of {n_c}; {100 * settings.confidence:g} % Wilson lower bound "
             f"{_pct(lower)})")
    if lower > settings.max_error_ratio:
        out.failed.append(("max_error_ratio", f"{bound} is above max_error_ratio {_pct(settings.max_error_ratio)}"))
    else:
        out.passed.append(f"{bound} is not above max_error_ratio {_pct(settings.max_error_ratio)}")


def _latency(canary: RevisionWindow, stable: RevisionWindow, compare: bool, settings: AnalysisSettings,
             out: _Findings, numbers: dict[str, float | int | None]) -> None:
    les, cum_c, cum_s = common_histograms(canary.latency_buckets, stable.latency_buckets)
    total_c, total_s = int(cum_c[-1]) if len(cum_c) else 0, int(cum_s[-1]) if len(cum_s) else 0
    numbers["canary_latency_count"], numbers["stable_latency_count"] = total_c, total_s
    if total_c < settings.enough:
        out.inconclusive.append(f"the canary's latency histogram holds {total_c} requests "
                                f"(< min_requests {settings.min_requests}): latency is inconclusive")
        return
    p95_c = histogram_quantile(QUANTILE, les, cum_c)
    p95_c_ms = None if p95_c is None else 1000 * p95_c
    numbers["canary_p95_ms"] = p95_c_ms
    if p95_c_ms is None:
        out.inconclusive.append("the canary's p95 is unknown (every request is in the +Inf bucket)")
        return
    if compare and total_s >= settings.enough:
        p95_s = histogram_quantile(QUANTILE, les, cum_s)
        p95_s_ms = None if p95_s is None else 1000 * p95_s
        numbers["stable_p95_ms"] = p95_s_ms
        u, p = mann_whitney_greater(np.diff(cum_c, prepend=0.0), np.diff(cum_s, prepend=0.0))
        numbers["latency_u"], numbers["latency_p_value"] = u, p
        if p95_s_ms is None:
            out.notes.append("the stable p95 is unknown (every request is in the +Inf bucket)")
        else:
            alpha, margin = settings.alpha, settings.latency_margin_ms
            text = f"canary p95 {p95_c_ms:.0f} ms vs stable {p95_s_ms:.0f} ms (Mann-Whitney p{_p(p)}"
            if p < alpha and p95_c_ms - p95_s_ms > margin:
                out.failed.append(("latency_vs_stable", f"{text} < {alpha:g}, more than latency_margin_ms {margin:g})"))
            elif p < alpha:
                out.passed.append(f"{text} < {alpha:g}, but within latency_margin_ms {margin:g})")
            else:
                out.passed.append(f"{text} ≥ {alpha:g}: not significantly slower)")
    elif compare:
        out.notes.append(f"the stable latency histogram holds {total_s} requests (< min_requests "
                         f"{settings.min_requests}): latency compared with max_p95_ms only")
    if settings.max_p95_ms is not None:
        if p95_c_ms > settings.max_p95_ms:
            out.failed.append(("max_p95_ms",
                               f"canary p95 {p95_c_ms:.0f} ms is above max_p95_ms {settings.max_p95_ms:g}"))
        else:
            out.passed.append(f"canary p95 {p95_c_ms:.0f} ms is within max_p95_ms {settings.max_p95_ms:g}")


def _query(check: QueryCheck, compare: bool, out: _Findings, numbers: dict[str, float | int | None]) -> None:
    canary, stable = _finite(check.canary), _finite(check.stable)
    key = f"query.{check.name}"
    numbers[f"{key}.canary"], numbers[f"{key}.stable"] = canary, stable
    if canary is None:
        out.inconclusive.append(f"query {check.name}: no canary value (inconclusive)")
        return
    if check.max_value is not None:
        if canary > check.max_value:
            out.failed.append((f"query:{check.name}",
                               f"query {check.name}: canary {canary:g} is above max_value {check.max_value:g}"))
        else:
            out.passed.append(f"query {check.name}: canary {canary:g} is within max_value {check.max_value:g}")
    if check.max_ratio is None:
        return
    if not compare:
        out.notes.append(f"query {check.name}: ratio not checked, the stable revision has too few requests")
    elif stable is None:
        out.inconclusive.append(f"query {check.name}: no stable value to compare with (inconclusive)")
    else:
        ratio = canary / stable if stable > 0 else (1.0 if canary <= 0 else math.inf)
        numbers[f"{key}.ratio"] = ratio
        text = f"query {check.name}: canary {canary:g} vs stable {stable:g} = {ratio:.2f}x"
        if ratio > check.max_ratio:
            out.failed.append((f"query:{check.name}", f"{text}, above max_ratio {check.max_ratio:g}"))
        else:
            out.passed.append(f"{text}, within max_ratio {check.max_ratio:g}")


def analyse(canary: RevisionWindow, stable: RevisionWindow, settings: AnalysisSettings,
            queries: Sequence[QueryCheck] = ()) -> Verdict:
    """The verdict on ``canary`` against ``stable`` over the same interval, with its reasons and numbers."""
    n_c, n_s = _whole(canary.requests), _whole(stable.requests)
    e_c, e_s = min(_whole(canary.errors), n_c), min(_whole(stable.errors), n_s)
    numbers: dict[str, float | int | None] = {
        "confidence": settings.confidence, "min_requests": settings.min_requests,
        "canary_requests": n_c, "canary_errors": e_c, "canary_error_ratio": e_c / n_c if n_c else None,
        "stable_requests": n_s, "stable_errors": e_s, "stable_error_ratio": e_s / n_s if n_s else None,
        "canary_error_ratio_lower": None, "error_p_value": None, "canary_latency_count": None,
        "stable_latency_count": None, "canary_p95_ms": None, "stable_p95_ms": None, "latency_u": None,
        "latency_p_value": None,
    }
    if n_c < settings.enough:
        numbers["failed_checks"] = 0
        return Verdict("inconclusive", (f"the canary answered {n_c} request{'' if n_c == 1 else 's'} in the interval (< min_requests "
                                        f"{settings.min_requests}): too few to judge",), numbers)
    compare = n_s >= settings.enough
    out = _Findings([], [], [], [])
    if not compare:
        out.notes.append(f"the stable revision answered {n_s} requests (< min_requests {settings.min_requests}): "
                         "compared with the absolute bounds only")
    _errors(n_c, e_c, n_s, e_s, compare, settings, out, numbers)
    _latency(canary, stable, compare, settings, out, numbers)
    for check in queries:
        _query(check, compare, out, numbers)
    numbers["failed_checks"] = len(out.failed)
    kind: VerdictKind = "fail" if out.failed else "inconclusive" if out.inconclusive else "pass"
    reasons = (*(text for _, text in out.failed), *out.inconclusive, *out.notes, *out.passed)
    return Verdict(kind, reasons, numbers, tuple(name for name, _ in out.failed))


# ---------------------------------------------------------------- the rollout's steps


@dataclass(frozen=True)
class HistoryEntry:
    at: float
    weight: int
    kind: str
    """a verdict kind, or a manual action: promote, abort, pause, resume"""
    reason: str


@dataclass(frozen=True)
class CanaryState:
    """Where a canary rollout stands; the shell persists it as JSON (:meth:`to_dict`, :meth:`from_dict`)."""

    step_index: int
    weight: int
    """the canary's share of traffic now, in percent (0 once aborted, 100 once promoted)"""
    started_at: float
    step_started_at: float
    consecutive_failures: int = 0
    inconclusive_in_step: int = 0
    passed_in_step: int = 0
    paused: bool = False
    pause_reason: str = ""
    outcome: Literal["promoted", "aborted"] | None = None
    history: tuple[HistoryEntry, ...] = ()

    @classmethod
    def begin(cls, steps: Sequence[int], now: float) -> CanaryState:
        """A rollout at its first step."""
        if not steps or any(b <= a for a, b in zip(steps, steps[1:], strict=False)) or steps[-1] != 100:
            raise ValueError(f"steps must strictly increase and end at 100, got {list(steps)}")
        return cls(step_index=0, weight=steps[0], started_at=now, step_started_at=now)

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["history"] = [{f.name: getattr(entry, f.name) for f in fields(entry)} for entry in self.history]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CanaryState:
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        values["history"] = tuple(HistoryEntry(**entry) for entry in data.get("history", ()))
        return cls(**values)


@dataclass(frozen=True)
class StepDecision:
    action: Action
    state: CanaryState
    weight: int
    """the canary's traffic share the shell applies, in percent"""
    reason: str


def _record(state: CanaryState, now: float, kind: str, reason: str) -> CanaryState:
    entry = HistoryEntry(now, state.weight, kind, reason if len(reason) <= 160 else reason[:159] + "…")
    return replace(state, history=(*state.history, entry)[-HISTORY_LIMIT:])


def _decide(action: Action, state: CanaryState, reason: str) -> StepDecision:
    return StepDecision(action, state, state.weight, reason)


def _finished(state: CanaryState) -> StepDecision:
    return _decide("hold", state, f"the rollout was already {state.outcome}; nothing changes")


def step(state: CanaryState, verdict: Verdict, settings: AnalysisSettings, steps: Sequence[int],
         now: float) -> StepDecision:
    """The rollout's next move after one analysis."""
    if state.outcome is not None:
        return _finished(state)
    summary = verdict.reasons[0] if verdict.reasons else verdict.kind
    state = _record(state, now, verdict.kind, summary)
    if state.paused and verdict.kind != "fail":
        return _decide("hold", state, f"paused ({state.pause_reason}): the {verdict.kind} analysis is recorded; "
                                      "nothing advances until the rollout is resumed")
    # a failing canary is rolled back even while paused: a pause holds the weight, it does not stop the watch
    at = f"at weight {state.weight}"
    if verdict.kind == "pass":
        passed = state.passed_in_step + 1
        if passed < settings.passes_per_step:
            state = replace(state, consecutive_failures=0, passed_in_step=passed)
            return _decide("extend", state, f"analysis passed {at} ({passed} of passes_per_step "
                                            f"{settings.passes_per_step}): {summary}")
        if state.step_index >= len(steps) - 1:
            state = replace(state, consecutive_failures=0, passed_in_step=passed, weight=100, outcome="promoted")
            return _decide("promote", state, f"analysis passed {at}, the last step: promoted ({summary})")
        index = state.step_index + 1
        before, weight = state.weight, steps[index]
        state = replace(state, step_index=index, weight=weight, step_started_at=now, consecutive_failures=0,
                        inconclusive_in_step=0, passed_in_step=0)
        return _decide("advance", state, f"analysis passed at weight {before}: advancing to {weight} ({summary})")
    if verdict.kind == "fail":
        failures = state.consecutive_failures + 1
        why = "; ".join(verdict.reasons[:max(1, len(verdict.failed))])
        state = replace(state, consecutive_failures=failures, passed_in_step=0)
        if failures >= settings.failure_limit:
            state = replace(state, weight=0, outcome="aborted")
            return _decide("abort", state, f"aborted {at} after {failures} consecutive failed analyses "
                                           f"(failure_limit {settings.failure_limit}): {why}")
        return _decide("extend", state, f"analysis failed {at} ({failures} of failure_limit "
                                        f"{settings.failure_limit}), analysing again: {why}")
    count = state.inconclusive_in_step + 1
    state = replace(state, inconclusive_in_step=count)
    if count < settings.max_inconclusive:
        return _decide("extend", state, f"analysis inconclusive {at} ({count} of max_inconclusive "
                                        f"{settings.max_inconclusive}), extending the step: {summary}")
    why = f"{count} inconclusive analyses {at} (max_inconclusive {settings.max_inconclusive}): {summary}"
    if settings.on_inconclusive == "fail":
        state = replace(state, weight=0, outcome="aborted")
        return _decide("abort", state, f"aborted after {why}")
    state = replace(state, paused=True, pause_reason=f"{count} inconclusive analyses {at}")
    return _decide("pause", state, f"paused after {why}; resume, promote or abort it by hand")


def promote(state: CanaryState, now: float) -> StepDecision:
    """Promote by hand: all traffic to the canary, whatever the analyses said."""
    if state.outcome is not None:
        return _finished(state)
    before = state.weight
    state = replace(_record(state, now, "promote", "promoted by hand"), weight=100, outcome="promoted",
                    paused=False, pause_reason="")
    return _decide("promote", state, f"promoted by hand at weight {before}")


def abort(state: CanaryState, reason: str, now: float) -> StepDecision:
    """Abort by hand: all traffic back to the stable revision."""
    if state.outcome is not None:
        return _finished(state)
    before = state.weight
    state = replace(_record(state, now, "abort", reason), weight=0, outcome="aborted", paused=False)
    return _decide("abort", state, f"aborted by hand at weight {before}: {reason}")


def pause(state: CanaryState, now: float, reason: str = "paused by hand") -> StepDecision:
    """Pause: the weight stays, verdicts are recorded, nothing advances or promotes until :func:`resume`."""
    if state.outcome is not None:
        return _finished(state)
    if state.paused:
        return _decide("hold", state, f"already paused ({state.pause_reason})")
    state = replace(_record(state, now, "pause", reason), paused=True, pause_reason=reason)
    return _decide("pause", state, f"{reason} at weight {state.weight}")


def resume(state: CanaryState, now: float) -> StepDecision:
    """Resume a paused rollout: the step continues at its weight with a fresh count of inconclusive analyses."""
    if state.outcome is not None:
        return _finished(state)
    if not state.paused:
        return _decide("hold", state, "not paused; nothing to resume")
    state = replace(_record(state, now, "resume", f"resumed (was: {state.pause_reason})"), paused=False,
                    pause_reason="", inconclusive_in_step=0)
    return _decide("extend", state, f"resumed at weight {state.weight}: analysing this step again")


def canary_replicas(replicas: int, weight: int) -> int:
    """Replicas the canary runs at ``weight`` percent of a service of ``replicas``: its share of the capacity,
    rounded up, at least 1 (the stable revision keeps all of its own meanwhile)."""
    return max(1, math.ceil(max(replicas, 1) * weight / 100))


def applied_share(weight: float, ready: int, wanted: int) -> float:
    """The canary's traffic share (percent) the gateway gets: its step's ``weight`` in proportion to the step's
    ``wanted`` replicas that are ``ready``, so its share never runs ahead of its capacity."""
    return round(weight * min(ready, wanted) / max(wanted, 1), 3)
