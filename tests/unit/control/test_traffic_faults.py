"""Which traffic faults hit a request: live ones only, each by its own draw, and what they add up to."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest

from lichen.control.traffic_faults import NO_EFFECT, FaultEffect, effect_for


@dataclass
class Fault:
    kind: str
    percent: float = 100.0
    delay_ms: float = 0.0
    status: int = 503
    until_wall: float = 100.0


def _draws(*values: float):
    source = itertools.cycle(values)
    return lambda: next(source)


def test_no_live_fault_means_no_effect() -> None:
    assert effect_for([], 10.0, _draws(0.0)) is NO_EFFECT
    assert effect_for([Fault("errors", until_wall=10.0)], 10.0, _draws(0.0)) is NO_EFFECT  # expired at its end


def test_each_fault_draws_on_its_own_against_its_percent() -> None:
    half = [Fault("errors", percent=50.0)]
    assert effect_for(half, 0.0, _draws(0.49)) == FaultEffect(status=503)
    assert effect_for(half, 0.0, _draws(0.5)) is NO_EFFECT
    hits = sum(effect_for(half, 0.0, _draws(i / 1000)).status == 503 for i in range(1000))
    assert hits == 500


def test_a_delayed_request_may_then_fail_and_delays_add_up() -> None:
    faults = [Fault("latency", delay_ms=200.0), Fault("latency", delay_ms=50.0), Fault("errors", status=500)]
    assert effect_for(faults, 0.0, _draws(0.0)) == FaultEffect(delay_s=pytest.approx(0.25), status=500)


def test_an_error_and_a_reset_do_not_both_apply_the_first_wins() -> None:
    assert effect_for([Fault("reset"), Fault("errors")], 0.0, _draws(0.0)) == FaultEffect(reset=True)
    assert effect_for([Fault("errors"), Fault("reset")], 0.0, _draws(0.0)) == FaultEffect(status=503)
