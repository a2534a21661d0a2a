"""A replica that answers 500 while the file named by FLAKY_FLAG exists (alert delivery tests)."""

from __future__ import annotations

import os

from lichen import Service, endpoint


class Flaky(Service):
    @endpoint("/predict", method="GET", timeout_s=5)
    def predict(self) -> dict:
        if os.path.exists(os.environ["FLAKY_FLAG"]):
            raise RuntimeError("injected failure")
        return {"ok": True}
