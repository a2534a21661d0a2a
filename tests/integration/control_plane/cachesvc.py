"""A test service that reads through Redis (``REDIS_URL``), as the reference app's cache does: a Redis outage
degrades it (counted in ``redis_errors``), never fails a request."""

from __future__ import annotations

import os

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from lichen import Service, endpoint


class Cached(Service):
    def setup(self) -> None:
        self.client = aioredis.Redis.from_url(os.environ["REDIS_URL"], socket_timeout=0.2,
                                              socket_connect_timeout=0.5)
        self.redis_errors = 0

    @endpoint("/get", method="GET")
    async def get(self) -> dict:
        try:
            hits = int(await self.client.incr("hits"))
        except (RedisError, OSError):
            self.redis_errors += 1
            hits = None
        return {"hits": hits, "redis_errors": self.redis_errors, "replica": os.environ.get("LICHEN_REPLICA")}
