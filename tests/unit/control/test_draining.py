"""When a stopping replica gets SIGTERM (lichen.control.draining), over plain data and a fake clock."""

from __future__ import annotations

from lichen.control.draining import CONFIRM_TIMEOUT_S, GatewayView, drain_decision
from lichen.testing import FakeClock


def test_without_a_gateway_the_signal_goes_at_once() -> None:
    decision = drain_decision(7, since=10.0, now=10.0, gateway=None)
    assert decision.signal and not decision.confirmed
    stopped = GatewayView(running=False, confirmed_version=3, alive=False)
    assert drain_decision(7, since=10.0, now=10.0, gateway=stopped).signal


def test_the_signal_waits_for_the_gateway_to_confirm_a_table_without_the_replica() -> None:
    clock = FakeClock()
    since = clock.now()
    gateway = GatewayView(running=True, confirmed_version=6)
    waiting = drain_decision(7, since, clock.now(), gateway)
    assert not waiting.signal and waiting.wake_at == since + CONFIRM_TIMEOUT_S
    clock.advance(0.04)
    confirmed = drain_decision(7, since, clock.now(), GatewayView(running=True, confirmed_version=7))
    assert confirmed.signal and confirmed.confirmed and "(0.04s)" in confirmed.reason
    newer = drain_decision(7, since, clock.now(), GatewayView(running=True, confirmed_version=9))
    assert newer.signal and newer.confirmed  # a later table also lacks the replica


def test_a_gateway_that_never_confirms_holds_the_stop_only_until_the_timeout() -> None:
    clock = FakeClock()
    since = clock.now()
    gateway = GatewayView(running=True, confirmed_version=2)
    clock.advance(CONFIRM_TIMEOUT_S - 0.01)
    assert not drain_decision(7, since, clock.now(), gateway).signal
    clock.advance(0.01)
    late = drain_decision(7, since, clock.now(), gateway)
    assert late.signal and not late.confirmed and "did not confirm" in late.reason
    assert drain_decision(7, since, clock.now(), gateway, confirm_timeout_s=60).signal is False


def test_on_shutdown_replicas_outlive_the_gateway_that_finishes_their_requests() -> None:
    running = GatewayView(running=True, confirmed_version=100, alive=True)
    decision = drain_decision(7, 0.0, 50.0, running, stopping=True)
    assert not decision.signal  # even confirmed, and past the timeout: the gateway still forwards requests
    gone = GatewayView(running=False, confirmed_version=100, alive=False)
    assert drain_decision(7, 0.0, 50.0, gone, stopping=True).signal
