"""Applying a ``lichen chaos`` traffic fault to one request (which faults hit it: :mod:`lichen.control.traffic_faults`)."""

from __future__ import annotations

import asyncio

from lichen.control.traffic_faults import FaultEffect
from lichen.gateway.requests import Request
from lichen.gateway.responses import Responder

RESET_STATUS = 502
"""how an injected reset is counted in the metrics: a failed request, as an upstream reset would be"""


async def inject(effect: FaultEffect, request: Request, responder: Responder, request_id: str) -> int | None:
    """Wait the effect's delay, then answer its error or drop the connection; the status counted, or None when
    the request goes on to the service."""
    if effect.delay_s:
        await asyncio.sleep(effect.delay_s)
    if effect.status:
        responder.send_simple(effect.status, "fault injected by lichen chaos", request_id,
                              close=request.has_body and not request.body.done)
        return effect.status
    if effect.reset:
        responder.flow.transport.abort()  # the client sees its connection reset, with no answer
        return RESET_STATUS
    return None
