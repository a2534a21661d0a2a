"""A service whose setup() waits for a test gate, and one whose setup() fails."""

from __future__ import annotations

import os

from gates import wait_for_gate

from lichen import Service, endpoint


class SlowSetup(Service):
    def setup(self) -> None:
        if not wait_for_gate("setup"):
            raise TimeoutError("test never opened the setup gate")
        self.loaded = True

    @endpoint("/ping", method="GET")
    def ping(self) -> dict:
        return {"loaded": self.loaded}


class BrokenSetup(Service):
    def setup(self) -> None:
        raise RuntimeError(f"model file missing: {os.environ.get('MODEL_PATH', '/nowhere/model.bin')}")

    @endpoint("/ping", method="GET")
    def ping(self) -> dict:
        return {}


class NotReadyYet(Service):
    """ready() reports false until the test opens a gate."""

    def ready(self) -> bool:
        from gates import gate_path

        return gate_path("ready").exists()

    @endpoint("/ping", method="GET")
    def ping(self) -> dict:
        return {}


not_a_service = 42
