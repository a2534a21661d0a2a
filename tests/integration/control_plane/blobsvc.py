"""A test service with a large answer (``GET /blob``: 32 KiB of JSON), for bandwidth faults."""

from __future__ import annotations

from lichen import Service, endpoint

BLOB = "".join(chr(ord("a") + i % 26) for i in range(32 * 1024))


class Blob(Service):
    @endpoint("/blob", method="GET")
    async def blob(self) -> dict:
        return {"blob": BLOB}
