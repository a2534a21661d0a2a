"""The service the secret-leak and redaction tests run under ``lichen serve``.

It misbehaves with its secret on purpose: it prints ``API_TOKEN`` at import,
logs it in a field whose name does not look secret, and with env
``CRASH_ONCE=1`` (first start only) or ``CRASH_ALWAYS=1`` raises an error
whose message holds it, so the crash's traceback and log tail do too. Its
endpoints log the user ids a request carries, as a real service would.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from pydantic import BaseModel

from lichen import Service, endpoint
from lichen.logs import get_logger

log = get_logger("secsvc")
APP_DIR = Path(os.environ.get("LICHEN_APP_DIR", "."))
TOKEN = os.environ.get("API_TOKEN", "")
print(f"starting with API_TOKEN={TOKEN}", flush=True)
_marker = APP_DIR / f"crashed-once-{os.environ.get('LICHEN_SERVICE', 'x')}"
if os.environ.get("CRASH_ONCE") == "1" and not _marker.exists():
    _marker.write_text("")
    raise RuntimeError(f"crashing once, holding {TOKEN}")
if os.environ.get("CRASH_ALWAYS") == "1":
    raise RuntimeError(f"always crashing, holding {TOKEN}")


class Order(BaseModel):
    user_id: str
    email: str = ""


class Shop(Service):
    def setup(self) -> None:
        log.info("token_loaded", api_value=TOKEN)

    @endpoint("/uses-secret", method="GET")
    async def uses_secret(self) -> dict:
        return {"sha256": hashlib.sha256(TOKEN.encode()).hexdigest()}

    @endpoint("/buy", method="POST")
    async def buy(self, order: Order) -> dict:
        log.info("bought", user_id=order.user_id, email=order.email, order=order.model_dump())
        return {"ok": True}

    @endpoint("/lookup", method="GET")
    async def lookup(self, user_id: str) -> dict:
        log.info("looked_up", user_id=user_id)
        return {"found": True}
