"""What the SDK adds per request: a plain FastAPI route vs the same handler as a Lichen Service.

Both apps are driven in-process through ASGI (no sockets) with the same JSON
body, so the difference is Lichen's wrapper: request id, per-endpoint gate,
metrics and one JSON log line (written to /dev/null). Prints both sides
measured in this run and their ratio (CPU time per request, best of the rounds).

    .venv/bin/python bench/sdk_overhead.py [--requests 4000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import time
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from lichen import Service, endpoint
from lichen.sdk.building import build_service_app
from lichen.sdk.logs import configure_logging


class Query(BaseModel):
    user_id: int
    k: int = 10


class Answer(BaseModel):
    items: list[int]


def plain_app() -> Any:
    app = FastAPI()

    @app.post("/recommend")
    async def recommend(query: Query) -> Answer:
        return Answer(items=list(range(query.k)))

    return app


class Recommender(Service):
    @endpoint("/recommend", method="POST", timeout_s=2, max_concurrency=64)
    async def recommend(self, query: Query) -> Answer:
        return Answer(items=list(range(query.k)))


BODY = json.dumps({"user_id": 7, "k": 10}).encode()
SCOPE = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "POST",
    "scheme": "http",
    "path": "/recommend",
    "raw_path": b"/recommend",
    "query_string": b"",
    "root_path": "",
    "headers": [(b"host", b"replica"), (b"content-type", b"application/json"), (b"content-length", b"22")],
    "client": ("127.0.0.1", 5000),
    "server": ("127.0.0.1", 8000),
}


async def drive(app: Any, requests: int) -> float:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": BODY, "more_body": False}

    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    for _ in range(200):  # warm up caches and lazily created metric children
        await app(dict(SCOPE), receive, send)
    started = time.process_time()  # CPU time of this process: steadier than wall time on a shared machine
    for _ in range(requests):
        await app(dict(SCOPE), receive, send)
    elapsed = time.process_time() - started
    assert set(statuses) == {200}, set(statuses)
    return elapsed / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds; the best of each side counts")
    args = parser.parse_args()
    plain, lichen = plain_app(), build_service_app(Recommender)
    plain_runs: list[float] = []
    lichen_runs: list[float] = []
    with open(os.devnull, "w") as devnull:
        configure_logging("info", stream=devnull)
        for _ in range(args.rounds):  # alternate so load from other processes hits both sides alike
            plain_runs.append(asyncio.run(drive(plain, args.requests)))
            lichen_runs.append(asyncio.run(drive(lichen, args.requests)))
        logging.shutdown()
    plain_s, lichen_s = min(plain_runs), min(lichen_runs)
    print(f"plain FastAPI route : {plain_s * 1e6:8.1f} us/request")
    print(f"lichen Service      : {lichen_s * 1e6:8.1f} us/request")
    print(f"ratio lichen/plain  : {lichen_s / plain_s:8.2f}x  (+{(lichen_s - plain_s) * 1e6:.1f} us/request)")


if __name__ == "__main__":
    main()
