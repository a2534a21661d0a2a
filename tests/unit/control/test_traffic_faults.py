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
    rate_kbps: float = 0.0


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


def test_a_bandwidth_fault_paces_the_answer_and_the_narrower_of_two_holds() -> None:
    assert effect_for([Fault("bandwidth", rate_kbps=800.0)], 0.0, _draws(0.0)) == FaultEffect(rate_bps=100_000.0)
    both = [Fault("bandwidth", rate_kbps=800.0), Fault("bandwidth", rate_kbps=80.0)]
    assert effect_for(both, 0.0, _draws(0.0)).rate_bps == pytest.approx(10_000.0)
    assert effect_for([Fault("bandwidth", rate_kbps=80.0), Fault("errors")], 0.0, _draws(0.0)) == FaultEffect(
        status=503)  # an answer made by the gateway is not paced


def test_sends_through_one_link_together_never_pass_its_rate() -> None:
    from lichen.control.traffic_faults import link_burst_bytes, link_wait

    rate = 10_000.0  # bytes per second
    bucket, now, sent, last_leaves = None, 0.0, 0, 0.0
    for size in [4096] * 25:  # two answers interleaved: one bucket, so they queue behind each other
        wait, bucket = link_wait(bucket, now, rate, size)
        last_leaves = now + wait
        sent += size
        now += 0.01  # asked faster than the link can carry
    assert sent - link_burst_bytes(rate) <= rate * last_leaves + 1e-6  # what left beyond the burst took its time
    assert last_leaves == pytest.approx((sent - link_burst_bytes(rate)) / rate)
    idle, bucket = link_wait(bucket, now + 60.0, rate, 1000)  # after a quiet minute: a burst's worth, no wait
    assert idle == 0.0 and bucket.tokens == pytest.approx(link_burst_bytes(rate) - 1000)
