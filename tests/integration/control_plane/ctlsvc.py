"""The test service the control-plane integration tests run under ``lichen serve``.

Its behaviour is steered from outside, as a broken production service would
misbehave: env ``CRASH_ON_START=1`` makes ``setup()`` fail, ``HOG_MB=N``
allocates N MiB in ``setup()``, a file ``unready`` in the app dir fails
readiness, ``POST /hang`` blocks the event loop so liveness stops
answering, and env ``FAIL_RATIO=0.3`` makes that share of ``POST /work``
fail with a 500 (a bad revision for canary tests).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from pydantic import BaseModel

from lichen import Service, endpoint

APP_DIR = Path(os.environ.get("LICHEN_APP_DIR", "."))
FAIL_RATIO = float(os.environ.get("FAIL_RATIO", "0"))
if os.environ.get("CRASH_ON_START") == "1":  # fail at import, before the server starts: a fast crash loop
    raise RuntimeError("configured to crash on start")


class WorkRequest(BaseModel):
    text: str


class Probe(Service):
    def setup(self) -> None:
        self.served = 0
        hog_mb = int(os.environ.get("HOG_MB", "0"))
        if hog_mb:
            self.blob = bytearray(hog_mb * 2**20)
            self.blob[::4096] = b"x" * len(self.blob[::4096])

    def ready(self) -> bool:
        return not (APP_DIR / "unready").exists()

    @endpoint("/whoami", method="GET")
    async def whoami(self) -> dict:
        return {
            "replica": os.environ.get("LICHEN_REPLICA"),
            "revision": os.environ.get("LICHEN_REVISION"),
            "version": os.environ.get("VERSION", ""),
            "secret_seen": bool(os.environ.get("API_SECRET")),
        }

    @endpoint("/work", method="POST")
    async def work(self, req: WorkRequest) -> dict:
        await asyncio.sleep(0.005)  # a little work, so requests overlap a replica's stop
        self.served += 1
        if int(self.served * FAIL_RATIO) != int((self.served - 1) * FAIL_RATIO):  # exactly FAIL_RATIO of them
            raise RuntimeError("configured to fail")
        return {"replica": os.environ.get("LICHEN_REPLICA"), "text": req.text}

    @endpoint("/slow", method="POST")
    async def slow(self, req: WorkRequest) -> dict:
        await asyncio.sleep(0.05)  # a fixed 50 ms per request: a replica's capacity is known (autoscaling tests)
        return {"replica": os.environ.get("LICHEN_REPLICA"), "text": req.text}

    @endpoint("/hang", method="POST")
    async def hang(self) -> dict:
        time.sleep(3600)  # blocks the event loop: /healthz stops answering
        return {}
