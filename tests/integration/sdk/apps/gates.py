"""Test-controlled gates: a handler waits until the test creates a file (no sleeps in tests)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

LIMIT_S = 60.0


def gate_path(name: str) -> Path:
    return Path(os.environ["LICHEN_TEST_GATES"]) / name


def wait_for_gate(name: str, limit_s: float = LIMIT_S) -> bool:
    deadline = time.monotonic() + limit_s
    path = gate_path(name)
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


async def wait_for_gate_async(name: str, limit_s: float = LIMIT_S) -> bool:
    deadline = time.monotonic() + limit_s
    path = gate_path(name)
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True
