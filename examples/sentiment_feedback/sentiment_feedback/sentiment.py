"""The sentiment scorer: a word lexicon, replaced at runtime; while a replacement builds, it answers 503."""

from __future__ import annotations

import logging
import os
import re
import threading
import time

from fastapi import HTTPException
from pydantic import BaseModel, Field

from lichen import Service, endpoint

log = logging.getLogger("sentiment")  # lines carry the request's request_id, as every replica log line does

DEFAULT_LEXICON = {
    "good": 1.0, "great": 1.5, "excellent": 2.0, "love": 1.5, "thanks": 0.5, "fast": 0.5, "helpful": 1.0,
    "bad": -1.0, "awful": -2.0, "hate": -1.5, "slow": -0.5, "broken": -1.5, "useless": -1.5, "never": -0.5,
}
WORD = re.compile(r"[a-z']+")


class Text(BaseModel):
    text: str = Field(min_length=1, max_length=10_000)


class Score(BaseModel):
    score: float
    label: str
    words_matched: int


class Lexicon(BaseModel):
    words: dict[str, float] = Field(min_length=1)


class Reloading(BaseModel):
    reloading: bool
    words: int


class Sentiment(Service):
    def setup(self) -> None:
        self.lexicon = dict(DEFAULT_LEXICON)
        self.reload_s = float(os.environ.get("LEXICON_RELOAD_S", "2"))
        self.reloading = threading.Event()

    @endpoint("/v1/score", method="POST", timeout_s=1, max_concurrency=32)
    def score(self, req: Text) -> Score:
        if self.reloading.is_set():  # the service's own 503: the client sees this body, not "upstream error"
            raise HTTPException(503, "lexicon is reloading", headers={"Retry-After": str(max(1, round(self.reload_s)))})
        words = WORD.findall(req.text.lower())
        hits = [self.lexicon[w] for w in words if w in self.lexicon]
        score = sum(hits) / max(1, len(hits))
        label = "positive" if score > 0.25 else "negative" if score < -0.25 else "neutral"
        log.info("scored", extra={"label": label, "words_matched": len(hits)})
        return Score(score=round(score, 3), label=label, words_matched=len(hits))

    @endpoint("/v1/lexicon", method="PUT", timeout_s=1)
    def replace_lexicon(self, req: Lexicon) -> Reloading:
        """Replace the lexicon; it builds in the background, and scoring answers 503 until it is in place."""
        if self.reloading.is_set():
            raise HTTPException(409, "a lexicon reload is already running")
        self.reloading.set()
        threading.Thread(target=self._build, args=(req.words,), daemon=True).start()
        return Reloading(reloading=True, words=len(req.words))

    def _build(self, words: dict[str, float]) -> None:
        time.sleep(self.reload_s)  # stands in for building a large lexicon
        self.lexicon = {w.lower(): v for w, v in words.items()}
        self.reloading.clear()
        log.info("lexicon_reloaded", extra={"words": len(words)})
