"""How a replica reads its signals: SIGTERM drains; a repeated SIGTERM changes nothing; a second Ctrl+C stops waiting."""

from __future__ import annotations

import signal

import uvicorn

from lichen.sdk.serving import ReplicaServer
from lichen.sdk.wrapping import ReplicaApp


async def _app(scope: dict, receive: object, send: object) -> None:  # never called
    raise AssertionError


def server(drain_s: float = 1.0) -> ReplicaServer:
    return ReplicaServer(uvicorn.Config(_app), ReplicaApp(_app, metrics_path="/metrics", slo_latencies_ms=()), drain_s)


def test_sigterm_starts_the_drain_window_and_a_repeated_sigterm_does_not_cut_it_short() -> None:
    replica = server()
    replica.handle_exit(signal.SIGTERM, None)
    assert replica.replica.state.draining and not replica.should_exit  # still serving for the window
    replica.handle_exit(signal.SIGTERM, None)  # e.g. a controller that restarted and signals again
    assert not replica.force_exit and not replica.should_exit
    replica.handle_exit(signal.SIGINT, None)  # a human insists
    assert replica.force_exit and replica.should_exit


def test_ctrl_c_skips_the_window_and_twice_stops_waiting() -> None:
    replica = server()
    replica.handle_exit(signal.SIGINT, None)
    assert replica.should_exit and not replica.force_exit
    replica.handle_exit(signal.SIGINT, None)
    assert replica.force_exit
