"""When a stopping replica may be sent SIGTERM: after the traffic stopped coming.

Stopping a replica the moment the controller decides to (a rolling update,
``lichen restart``, a scale-down, ``lichen down``) loses requests: the gateway
still routes to it until it has applied a table without it, and a replica that
closed its listener answers those with a refused connection, which a POST may
not retry. So a planned stop has two steps:

1. the replica leaves the endpoint registry (registry version ``needed_version``);
2. SIGTERM is sent only once the gateway has *confirmed* it serves a table at
   least that new (:func:`drain_decision`).

The rules, in order:

* no gateway (a controller without one, or a gateway whose process is not
  running): nothing routes through it, signal at once (a gateway that starts
  later reads the current table);
* ``lichen down`` (``stopping``): the gateway is stopped first, finishing the
  requests it has in flight, so replicas are signalled once it has exited;
* otherwise: signal once ``confirmed_version >= needed_version``;
* a gateway that does not confirm within ``confirm_timeout_s`` (hung,
  overloaded) must not hold a rollout forever: signal anyway, and say so.

A replica that fails liveness is not drained (it answers nothing; the caller
sends SIGKILL), and nothing here applies to it.
"""

from __future__ import annotations

from dataclasses import dataclass

CONFIRM_TIMEOUT_S = 3.0
"""longest wait for the gateway to confirm a table without the replica"""


@dataclass(frozen=True)
class GatewayView:
    """What the controller knows of its gateway this pass."""

    running: bool
    """a gateway process is running and has answered its health check"""
    confirmed_version: int
    """the newest endpoint-registry version the gateway has confirmed serving (-1: none yet)"""
    alive: bool = True
    """its process has not exited (during ``lichen down`` it may be running but no longer answering)"""


@dataclass(frozen=True)
class DrainDecision:
    signal: bool
    """send SIGTERM now"""
    reason: str
    """why now (or what it waits for), for the event log"""
    wake_at: float | None = None
    """when to decide again if nothing else happens (the confirmation timeout)"""
    confirmed: bool = False
    """the gateway confirmed it no longer routes to the replica"""


def drain_decision(
    needed_version: int,
    since: float,
    now: float,
    gateway: GatewayView | None,
    *,
    stopping: bool = False,
    confirm_timeout_s: float = CONFIRM_TIMEOUT_S,
) -> DrainDecision:
    """Whether a replica withdrawn at registry version ``needed_version`` at ``since`` may get SIGTERM at ``now``."""
    waited = now - since
    if gateway is None:
        return DrainDecision(True, "no gateway routes to it")
    if stopping:
        if gateway.alive:
            return DrainDecision(False, "waiting for the gateway to finish its requests and stop")
        return DrainDecision(True, f"the gateway stopped ({waited:.2f}s)")
    if not gateway.running:
        return DrainDecision(True, "no gateway is running")
    if gateway.confirmed_version >= needed_version:
        return DrainDecision(True, f"the gateway confirmed it no longer routes here ({waited:.2f}s)", confirmed=True)
    if waited >= confirm_timeout_s:
        return DrainDecision(True, f"the gateway did not confirm within {confirm_timeout_s:g}s")
    return DrainDecision(False, "waiting for the gateway to confirm", wake_at=since + confirm_timeout_s)
