"""A plain FastAPI app (no lichen SDK) that `lichen serve` wraps with health and metrics."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

state = {"started": False}


@asynccontextmanager
async def lifespan(_app: FastAPI):
    state["started"] = True
    yield


app = FastAPI(lifespan=lifespan)


@app.get("/hello/{name}")
async def hello(name: str) -> dict:
    return {"hello": name, "lifespan_ran": state["started"]}
