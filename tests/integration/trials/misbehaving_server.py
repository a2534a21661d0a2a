"""A small HTTP/1.1 server for the load generator's tests; what it does depends on the path.

``/ok`` answers 200 at once (keep-alive); ``/status/503`` answers 503;
``/hang`` never answers; ``/reset`` closes the connection without a word;
``/stall`` answers, but first blocks the whole server for ``STALL_S`` (a
stop-the-world pause: every request that arrives meanwhile queues).
Usage: python misbehaving_server.py PORT
"""

from __future__ import annotations

import asyncio
import sys
import time

STALL_S = 0.3


class Handler(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            path = head.split(b" ", 2)[1].decode()
            if path == "/hang":
                continue
            if path == "/reset":
                self.transport.abort()
                return
            if path == "/stall":
                time.sleep(STALL_S)
            status = 503 if path == "/status/503" else 200
            body = b"ok\n"
            self.transport.write(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body))


async def main(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Handler, "127.0.0.1", port)
    print("listening", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
