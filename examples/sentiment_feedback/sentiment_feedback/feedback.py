"""The feedback service: scores each piece of feedback by calling ``sentiment`` through the gateway."""

from __future__ import annotations

import itertools
import logging

from fastapi import HTTPException
from pydantic import BaseModel, Field

from lichen import Service, endpoint
from lichen.client import Client

log = logging.getLogger("feedback")


class FeedbackIn(BaseModel):
    text: str = Field(min_length=1, max_length=10_000)


class Stored(BaseModel):
    id: int
    text: str
    label: str
    score: float


class Feedback(Service):
    def setup(self) -> None:
        # One pooled client per replica. Its base URL is sentiment's on the gateway (LICHEN_SERVICE_URLS);
        # each call carries the X-Request-ID of the request being handled.
        self.sentiment = Client("sentiment", timeout=2.0)
        self.ids = itertools.count(1)
        self.stored: list[Stored] = []

    def teardown(self) -> None:
        self.sentiment.close()

    @endpoint("/v1/feedback", method="POST", timeout_s=4, max_concurrency=32)
    def submit(self, req: FeedbackIn) -> Stored:
        answer = self.sentiment.post("/v1/score", json={"text": req.text})
        if answer.status_code >= 500:  # say which dependency failed and why, with its Retry-After
            retry_after = answer.headers.get("retry-after")
            raise HTTPException(503, f"sentiment: {_detail(answer)}",
                                headers={"Retry-After": retry_after} if retry_after else None)
        answer.raise_for_status()
        scored = answer.json()
        item = Stored(id=next(self.ids), text=req.text, label=scored["label"], score=scored["score"])
        self.stored.append(item)
        log.info("feedback_stored", extra={"feedback_id": item.id, "label": item.label})
        return item


def _detail(response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or f"HTTP {response.status_code}"
    return str(body.get("detail") or body.get("error") or body) if isinstance(body, dict) else str(body)
