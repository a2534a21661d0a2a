"""Fixtures for the control-plane tests: each test gets its own app dir, torn down with `lichen down`."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from cp_harness import App


@pytest.fixture
def make_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], App]]:
    apps: list[App] = []

    def make() -> App:
        app = App(tmp_path_factory.mktemp("cpapp"))
        apps.append(app)
        return app

    yield make
    for app in apps:
        if (app.dir / "lichen.yaml").exists():
            app.cli("down", str(app.dir), check=False)
        leftovers = app.marked_processes()
        for process in leftovers:
            process.kill()
        assert not leftovers, f"processes survived lichen down: {leftovers}"
