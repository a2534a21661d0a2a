"""HTTP probes over raw asyncio streams (cheap: one short connection per probe).

``probe_http`` returns the outcome the pure verdict logic in
:mod:`lichen.control.probing` expects: ``ok`` for a 2xx/3xx answer,
``failed`` for any other status, ``timeout`` when no answer came within the
timeout (a hung process still accepts connections in the kernel), and
``refused`` when nothing listens.
"""

from __future__ import annotations

import asyncio
import contextlib

from lichen.control.probing import Outcome


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
