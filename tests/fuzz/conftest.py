"""The fuzzers' one real app, shared by the session (tests/fuzz/fuzz_apps.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fuzz_apps import FuzzApp, running_app


@pytest.fixture(scope="session")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzApp]:
    with running_app(tmp_path_factory.mktemp("fuzzapp")) as app:
        yield app
