"""Probe verdicts with Kubernetes semantics.

A probe runs every ``period_s`` once ``initial_delay_s`` has passed since
the process started; an answer slower than ``timeout_s`` is a failure. The
verdict flips to passing after ``success_threshold`` consecutive successes
and to failing after ``failure_threshold`` consecutive failures. Readiness
starts failing (a new replica receives no traffic until it passes);
liveness starts passing.

One Lichen addition: until a replica has answered any probe, a refused
connection is not counted against liveness (the process is still starting,
like a Kubernetes startup probe), and until readiness first succeeds it is
polled every ``STARTUP_POLL_S`` (for at most ``STARTUP_WINDOW_S`` after the
process started), so a fresh replica joins the moment it can serve, also
when it answers 503 while its ``setup()`` loads a model. After the first
success the spec's period applies, so ``success_threshold`` still spans
that many periods.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from lichen.spec.models import ProbeSpec

ProbeKind = Literal["readiness", "liveness"]
Outcome = Literal["ok", "failed", "timeout", "refused"]
STARTUP_POLL_S = 0.1
STARTUP_WINDOW_S = 120.0


@dataclass(frozen=True)
class ProbeState:
    kind: ProbeKind
    passing: bool
    successes: int = 0
    failures: int = 0
    last_started_at: float | None = None
    answered: bool = False
    last_outcome: str = ""
    ever_passed: bool = False
    """True once the verdict has been passing (a readiness probe then keeps its period)"""


def initial_state(kind: ProbeKind) -> ProbeState:
    return ProbeState(kind=kind, passing=(kind == "liveness"))


def next_probe_at(state: ProbeState, spec: ProbeSpec, process_started_at: float) -> float:
    """When the next probe of this kind should start."""
    first = process_started_at + spec.initial_delay_s
    if state.last_started_at is None:
        return first
    starting = (state.kind == "readiness" and not (state.passing or state.ever_passed) and state.successes == 0
                and state.last_started_at - process_started_at < STARTUP_WINDOW_S)
    if starting:
        return max(first, state.last_started_at + min(STARTUP_POLL_S, spec.period_s))
    return max(first, state.last_started_at + spec.period_s)


def record_probe(state: ProbeState, spec: ProbeSpec, outcome: Outcome, started_at: float) -> ProbeState:
    """The state after one probe that started at ``started_at``."""
    ok = outcome == "ok"
    answered = state.answered or outcome in ("ok", "failed")
    if not ok and outcome == "refused" and not state.answered and state.kind == "liveness":
        return replace(state, last_started_at=started_at, last_outcome=outcome)
    if ok:
        successes, failures = state.successes + 1, 0
        passing = state.passing or successes >= spec.success_threshold
    else:
        successes, failures = 0, state.failures + 1
        passing = state.passing and failures < spec.failure_threshold
    return ProbeState(
        kind=state.kind,
        passing=passing,
        successes=successes,
        failures=failures,
        last_started_at=started_at,
        answered=answered,
        last_outcome=outcome,
        ever_passed=state.ever_passed or passing,
    )


def worst_case_detection_s(spec: ProbeSpec) -> float:
    """Longest time from a hang to a failing verdict: period x threshold + timeout."""
    return spec.period_s * spec.failure_threshold + spec.timeout_s
