"""A service exercising every SDK feature, served by the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from gates import wait_for_gate, wait_for_gate_async
from prometheus_client import Counter
from pydantic import BaseModel, Field

from lichen import Service, endpoint


class EchoRequest(BaseModel):
    text: str
    times: int = Field(1, ge=1, le=10)


class EchoResponse(BaseModel):
    echoed: str
    replica_setup: bool


class Echo(Service):
    """Echoes text; holds requests on test gates."""

    def setup(self) -> None:
        self.setup_done = True
        self.echoes = Counter("echo_words_total", "Words echoed.", registry=self.metrics)

    @endpoint("/echo", method="POST", timeout_s=5, max_concurrency=8)
    def echo(self, req: EchoRequest) -> EchoResponse:
        self.echoes.inc(len(req.text.split()) * req.times)
        return EchoResponse(echoed=" ".join([req.text] * req.times), replica_setup=self.setup_done)

    @endpoint("/items/{item_id}", method="GET")
    async def item(self, item_id: int, verbose: bool = False) -> dict:
        return {"item_id": item_id, "verbose": verbose}

    @endpoint("/hold", method="POST", timeout_s=60, max_concurrency=2)
    def hold(self, gate: str) -> dict:
        return {"released": wait_for_gate(gate)}

    @endpoint("/sleepy", method="POST", timeout_s=0.3, max_concurrency=4)
    def sleepy(self, gate: str) -> dict:
        return {"released": wait_for_gate(gate)}

    @endpoint("/sleepy-async", method="POST", timeout_s=0.3)
    async def sleepy_async(self, gate: str) -> dict:
        return {"released": await wait_for_gate_async(gate)}

    @endpoint("/tokens", method="GET", stream=True, timeout_s=10)
    async def tokens(self, gate: str, n: int = 3) -> AsyncIterator[dict]:
        yield {"token": 0}
        await wait_for_gate_async(gate)
        for i in range(1, n):
            yield {"token": i}

    @endpoint("/sync-tokens", method="GET", stream=True)
    def sync_tokens(self, n: int = 3) -> Iterator[str]:
        for i in range(n):
            yield f"t{i}"

    @endpoint("/boom", method="POST", idempotent=True)
    def boom(self) -> dict:
        raise RuntimeError("kaboom")
