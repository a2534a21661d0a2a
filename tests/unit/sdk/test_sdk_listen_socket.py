"""The replica's pre-bound listening socket must be marked as TCP.

asyncio only sets TCP_NODELAY on accepted sockets whose ``proto`` is
IPPROTO_TCP; a socket created with proto 0 leaves Nagle on, and every
response then waits ~40 ms for the client's delayed ACK.
"""

from __future__ import annotations

import asyncio
import socket

from lichen.sdk.serving import _listen


def test_listening_socket_is_tcp_so_asyncio_disables_nagle() -> None:
    listener = _listen("127.0.0.1", 0)
    try:
        assert listener.proto == socket.IPPROTO_TCP
        listener.listen()
        port = listener.getsockname()[1]
        seen: list[int] = []

        async def main() -> None:
            def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                sock = writer.get_extra_info("socket")
                seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                writer.close()

            server = await asyncio.start_server(on_connect, sock=listener)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await reader.read()  # the server closes after recording the option
            writer.close()
            server.close()

        asyncio.run(main())
        assert seen and seen[0] != 0
    finally:
        listener.close()
