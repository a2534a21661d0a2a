"""The dashboard URL `lichen up` prints works when opened, in a real browser (Debian's chromium, Playwright).

On a terminal `lichen up` prints the URL with the token in its fragment: it
opens signed in. Elsewhere (a log, a pipe) it prints the URL without the
token: that page asks for the token instead of failing with "HTTP 401", and
takes it pasted in.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from waiting import free_port

from lichen.cli.output import dashboard_line

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium is not installed"),
]
TOKEN = "tab-secret"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


@pytest.fixture(scope="module")
def base_url():
    import uvicorn
    from fastapi import FastAPI

    from lichen.observe.dashboard import build_dashboard_router
    from lichen.observe.http_api import build_query_router
    from lichen.observe.promql import Engine
    from lichen.observe.rules import RuleManager
    from lichen.observe.series import SeriesStore

    store = SeriesStore()
    engine = Engine(store)
    rules = RuleManager(store, engine)
    app = FastAPI()
    app.include_router(build_query_router(store, engine, rules))
    app.include_router(build_dashboard_router(app_name="shop", engine=engine, rules=rules, token=TOKEN, refresh_s=1.0))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def browser_page(tmp_path: Path):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(user_data_dir=str(tmp_path / "profile"),
                                                        executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield context.new_page()
        finally:
            context.close()


def _url(line: str) -> str:
    return line.split(" ")[1]


def _loaded(page) -> None:  # noqa: ANN001
    page.wait_for_function("() => Number(document.body.dataset.refreshes || 0) >= 1", timeout=30_000)
    assert page.locator("#token-form").is_hidden()
    assert page.locator("#error").is_hidden(), page.locator("#error").inner_text()
    assert page.locator("#app-name").inner_text() == "shop"


def test_the_url_printed_on_a_terminal_opens_signed_in(base_url: str, browser_page) -> None:
    page = browser_page
    page.goto(_url(dashboard_line(base_url, TOKEN, private=True)), wait_until="load")
    _loaded(page)
    assert "#token" not in page.url  # moved to the tab's sessionStorage, out of the address bar and history


def test_the_url_printed_to_a_log_asks_for_the_token_instead_of_failing(base_url: str, browser_page) -> None:
    page = browser_page
    line = dashboard_line(base_url, TOKEN, private=False)
    assert TOKEN not in line
    page.goto(_url(line), wait_until="load")
    page.locator("#token-form").wait_for(state="visible", timeout=30_000)
    assert page.locator("#error").is_hidden()  # not "HTTP 401 missing or wrong bearer token", twice
    assert "lichen dashboard" in page.locator("#token-form").inner_text()
    assert page.locator("#token-wrong").is_hidden()

    page.fill("#token-input", "not-the-token")
    page.click("#token-form button")
    page.locator("#token-wrong").wait_for(state="visible", timeout=30_000)

    page.fill("#token-input", TOKEN)
    page.click("#token-form button")
    _loaded(page)
