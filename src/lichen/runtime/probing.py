"""HTTP probes over raw asyncio streams (cheap: one short connection per probe).

``probe_http`` returns the outcome the pure verdict logic in
:mod:`lichen.control.probing` expects: ``ok`` for a 2xx/3xx answer,
``failed`` for any other status, ``timeout`` when no answer came within the
timeout (a hung process still accepts connections in the kernel), and
``refused`` when nothing listens.

:func:`start_probing` runs a replica's readiness and liveness probes, one
task per kind, on the :class:`HttpProber` seam and an injected clock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Literal, Protocol

from lichen.clocks import Clock
from lichen.control import probing
from lichen.control.probing import Outcome
from lichen.logs import get_logger
from lichen.runtime.replicas import HOST, Replica
from lichen.spec.models import ProbeSpec, ProbesSpec

log = get_logger("lichen.controller")


async def probe_http(host: str, port: int, path: str, timeout_s: float) -> Outcome:
    writer = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
            status_line = await reader.readline()
    except TimeoutError:
        return "timeout"
    except (ConnectionRefusedError, ConnectionResetError, BrokenPipeError):
        return "refused"
    except OSError:
        return "refused"
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 0.1)
    parts = status_line.split()
    if len(parts) < 2 or not parts[1].isdigit():
        return "failed" if status_line else "refused"
    status = int(parts[1])
    return "ok" if 200 <= status < 400 else "failed"


async def port_answers(host: str, port: int, timeout_s: float) -> bool:
    """True when something accepts a TCP connection on ``host:port``."""
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(host, port)
    except (TimeoutError, OSError):
        return False
    writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), 0.1)
    return True


class HttpProber:
    """The probing seam: real sockets. :class:`lichen.testing.FakeProber` is its twin."""

    async def probe(self, host: str, port: int, path: str, timeout_s: float) -> Outcome:
        return await probe_http(host, port, path, timeout_s)

    async def port_answers(self, host: str, port: int, timeout_s: float) -> bool:
        return await port_answers(host, port, timeout_s)


class Prober(Protocol):
    async def probe(self, host: str, port: int, path: str, timeout_s: float) -> Outcome: ...


def start_probing(replica: Replica, probes: ProbesSpec, prober: Prober, clock: Clock,
                  on_flip: Callable[[], None]) -> None:
    """One task per probe kind, so a slow readiness answer never delays liveness (and vice versa)."""
    replica.stop_probing()
    loop = asyncio.get_running_loop()
    replica.probe_tasks = [loop.create_task(probe_replica(replica, kind, getattr(probes, kind), prober, clock, on_flip))
                           for kind in ("readiness", "liveness")]


async def probe_replica(replica: Replica, kind: Literal["readiness", "liveness"], probe: ProbeSpec, prober: Prober,
                        clock: Clock, on_flip: Callable[[], None]) -> None:
    """Probe ``replica`` on its schedule until cancelled, keep its probe state and call ``on_flip`` when
    the verdict flips (the controller's wake-up)."""
    record = replica.record
    port = record.port
    assert port is not None
    while True:
        started = replica.started_mono if replica.started_mono is not None else clock.now()
        delay = probing.next_probe_at(getattr(replica, kind), probe, started) - clock.now()
        if delay > 0:
            await clock.sleep(delay)
        now = clock.now()
        try:
            outcome = await prober.probe(HOST, port, probe.path, probe.timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception:  # a probe must never end its loop: count it as a failure
            log.exception("probe_crashed", probe=kind, replica=record.id)
            outcome = "failed"
        before = getattr(replica, kind)
        after = probing.record_probe(before, probe, outcome, now)
        setattr(replica, kind, after)
        if after.passing != before.passing:
            on_flip()
