"""Shared by bench/autoscaling.py and bench/canary.py: HTTP/1.1 over raw asyncio streams for open-loop loads.

A LIFO pool of keep-alive connections makes a request O(1) (httpx's pool scans its connections per request:
with hundreds in flight it stalled the load's own loop by seconds, which would count as the server's latency).
A pooled connection the server had closed is retried once on a fresh one, and only when the server never saw
the request (a reset or an empty read before any byte of the answer).
"""

from __future__ import annotations

import asyncio

import httpx


class RawClient:
    def __init__(self, url: str, method: str = "GET", body: bytes = b"") -> None:
        parsed = httpx.URL(url)
        self.host, self.port = parsed.host, parsed.port or 80
        head = f"{method} {parsed.raw_path.decode()} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        if body or method not in ("GET", "HEAD"):
            head += f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
        self.request = (head + "\r\n").encode() + body
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def exchange(self) -> tuple[str, dict[str, str]]:
        """(the response's status, or the error's class name; the response headers, lower-cased names)."""
        for attempt in (0, 1):
            reused = bool(self.idle) and attempt == 0
            try:
                reader, writer = self.idle.pop() if reused else await asyncio.open_connection(self.host, self.port)
            except OSError as exc:
                return type(exc).__name__, {}
            try:
                writer.write(self.request)
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.CancelledError:  # timed out: this connection is never reused
                writer.close()
                raise
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                writer.close()
                stale = isinstance(exc, ConnectionResetError | BrokenPipeError) or (
                    isinstance(exc, asyncio.IncompleteReadError) and not exc.partial)
                if reused and stale:  # a keep-alive connection the server had closed: it never saw this request
                    continue
                return type(exc).__name__, {}
            lines = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            try:
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    while (size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)) > 0:
                        await reader.readexactly(size + 2)
                    await reader.readuntil(b"\r\n")
                elif "content-length" in headers:
                    await reader.readexactly(int(headers["content-length"]))
                else:
                    await reader.read()
                    headers["connection"] = "close"
            except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                writer.close()
                return type(exc).__name__, {}
            except asyncio.CancelledError:
                writer.close()
                raise
            if headers.get("connection", "").lower() == "close":
                writer.close()
            else:
                self.idle.append((reader, writer))
            return (lines[0].split(" ")[1] if " " in lines[0] else "BadStatusLine"), headers
        return "ConnectionReset", {}

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
