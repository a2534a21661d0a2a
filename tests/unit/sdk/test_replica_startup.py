"""What a fast replica relies on (issue 12, "fast replicas"; the figures are in bench/sdk_overhead.py).

- ``lichen serve`` imports only what serving needs: no control plane, spec models, rich or httpx.
- It runs on uvicorn's own loop choice (uvloop when installed), as ``uvicorn.run`` does.
- Its log lines are batched per pass of the event loop, never lost, and never reordered.
- The access log's direct line is byte for byte the line the logging path writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from lichen.logs import JsonFormatter, get_logger
from lichen.sdk.logs import ACCESS_LOGGER, LoopBatchingHandler, configure_logging, direct_handler, request_line
from lichen.sdk.settings import ReplicaSettings

# What `lichen serve` must not import before it answers: each costs start time a replica does not need.
HEAVY = ("lichen.runtime", "lichen.spec", "lichen.control", "lichen.gateway", "lichen.observe", "lichen.api",
         "lichen.registry", "lichen.deploy", "lichen.green", "lichen.cli.controlling", "lichen.cli.jobs",
         "lichen.cli.specs", "lichen.cli.observing", "rich", "yaml", "httpx", "psutil")

SERVE_IMPORTS = """
import json, sys
from lichen.cli.main import _app_for
import typer.main
typer.main.get_command(_app_for(["--debug", "serve", "x:y"]))   # the app `lichen serve` runs, as click sees it
from lichen.sdk.serving import serve                              # what the verb imports when it runs
print(json.dumps(sorted(sys.modules)))
"""


def test_lichen_serve_imports_no_control_plane_spec_rich_or_httpx() -> None:
    out = subprocess.run([sys.executable, "-c", SERVE_IMPORTS], capture_output=True, text=True, check=True).stdout
    modules = json.loads(out)
    heavy = sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert not heavy, f"lichen serve imports {heavy}"


GATEWAY_IMPORTS = """
import json, sys
from lichen.cli.main import _app_for
import typer.main
typer.main.get_command(_app_for(["gateway", "--config", "x.json"]))
from lichen.gateway.running import run_gateway                   # what the verb imports when it runs
print(json.dumps(sorted(sys.modules)))
"""


def test_lichen_gateway_imports_nothing_it_does_not_need_before_it_listens() -> None:
    """A killed gateway is restarted by the controller; requests wait for its start, so it loads no other verb,
    no control plane, and neither httpx (loaded once it listens) nor PyJWT (only for JWT auth)."""
    out = subprocess.run([sys.executable, "-c", GATEWAY_IMPORTS], capture_output=True, text=True, check=True).stdout
    heavy = sorted(m for m in json.loads(out) if m.split(".")[0] in ("httpx", "jwt", "rich")
                   or m.startswith(("lichen.runtime", "lichen.api", "lichen.observe", "lichen.deploy", "lichen.trials"))
                   or (m.startswith("lichen.cli.") and m not in ("lichen.cli.main", "lichen.cli.gateway")))
    assert not heavy, f"lichen gateway imports {heavy}"


def test_importing_the_cli_entry_point_builds_no_verb_until_it_is_needed() -> None:
    code = "import sys, lichen.cli.main; print([m for m in sys.modules if m.startswith('lichen.cli.')])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['lichen.cli.main']"


def test_lichen_serve_help_and_usage_errors_are_unchanged() -> None:
    run = [sys.executable, "-c", "from lichen.cli.main import run; run()"]
    shown = subprocess.run([*run, "serve", "--help"], capture_output=True, text=True)
    assert shown.returncode == 0 and "--port" in shown.stdout and "Example" in shown.stdout
    env = {k: v for k, v in os.environ.items() if k != "LICHEN_SERVICE"}
    wrong = subprocess.run([*run, "serve"], capture_output=True, text=True, env=env)
    assert wrong.returncode == 2 and "TARGET: give module:Class" in wrong.stderr


def test_the_whole_cli_is_still_there() -> None:
    import typer.main

    from lichen.cli.main import app

    names = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    assert {"serve", "up", "validate", "run", "gateway", "status"} <= names


def test_serving_runs_on_uvicorns_loop_choice() -> None:
    uvloop = pytest.importorskip("uvloop")
    import uvicorn

    from lichen.sdk.serving import _loop_factory

    factory = _loop_factory(uvicorn.Config(lambda *a: None))
    loop = factory() if factory is not None else asyncio.new_event_loop()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


@pytest.fixture()
def batched() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure_logging("info", stream=stream, settings=ReplicaSettings(service="api", replica="api-0"), batched=True)
    try:
        yield stream
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


@contextlib.contextmanager
def only_the_replicas_handler() -> Iterator[None]:
    """Without pytest's own capture handlers on the root logger, as in a replica."""
    root = logging.getLogger()
    saved = list(root.handlers)
    root.handlers[:] = [h for h in saved if isinstance(h, LoopBatchingHandler)]
    try:
        yield
    finally:
        root.handlers[:] = saved


def test_lines_logged_on_the_loop_go_out_together_on_its_next_pass(batched: io.StringIO) -> None:
    log = get_logger("lichen.sdk")
    writes: list[str] = []
    original = batched.write
    batched.write = lambda text: writes.append(text) or original(text)  # type: ignore[method-assign]

    async def main() -> None:
        log.info("one")
        log.info("two")
        assert batched.getvalue() == ""  # kept until the loop's next pass
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert [json.loads(line)["event"] for line in batched.getvalue().splitlines()] == ["one", "two"]
        log.info("three")
        threading.Thread(target=log.info, args=("from_a_thread",)).start()  # writes what is kept first
        await asyncio.sleep(0.2)

    asyncio.run(main())
    assert [json.loads(line)["event"] for line in batched.getvalue().splitlines()] == [
        "one", "two", "three", "from_a_thread"]
    assert len(writes) <= 3


def test_kept_lines_are_written_by_flush_and_a_later_loop_still_gets_its_lines_out(batched: io.StringIO) -> None:
    log = get_logger("lichen.sdk")

    async def log_and_leave() -> None:
        log.info("last_words")  # the loop closes before its next pass

    asyncio.run(log_and_leave())
    logging.getLogger().handlers[0].flush()
    assert json.loads(batched.getvalue())["event"] == "last_words"

    async def again() -> None:
        log.info("next_loop")
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(again())
    assert json.loads(batched.getvalue().splitlines()[-1])["event"] == "next_loop"


@pytest.mark.parametrize("path", ["/ping", "/é/\"quoted\"/\\back", "/tab\there\n", "/\u2603"])
def test_the_direct_request_line_is_the_line_the_logging_path_writes(batched: io.StringIO, path: str) -> None:
    with only_the_replicas_handler():
        handler = direct_handler(logging.getLogger(ACCESS_LOGGER), logging.INFO)
        assert isinstance(handler, LoopBatchingHandler)
        get_logger(ACCESS_LOGGER).info("request", request_id="r1", method="GET", path=path, endpoint="/x/{id}",
                                       status=200, latency_ms=1.25)
    generic = batched.getvalue().strip()
    ts = json.loads(generic)["ts"]
    assert isinstance(handler.formatter, JsonFormatter)
    fast = request_line(handler.formatter, 0.0, "r1", "GET", path, "/x/{id}", 200, 1.25)
    assert fast.split(",", 1)[1] == generic.split(",", 1)[1]  # everything after ts
    assert fast.replace(json.loads(fast)["ts"], ts) == generic


def test_a_filter_or_another_handler_turns_the_direct_line_off(batched: io.StringIO) -> None:
    access = logging.getLogger(ACCESS_LOGGER)
    with only_the_replicas_handler():
        assert direct_handler(access, logging.INFO) is not None
        assert direct_handler(access, logging.DEBUG) is None  # not enabled at --log-level info
    assert direct_handler(access, logging.INFO) is None  # pytest's capture handler would miss the line
    extra = logging.StreamHandler(io.StringIO())
    with only_the_replicas_handler():
        logging.getLogger().addHandler(extra)  # a user's own handler
        try:
            assert direct_handler(access, logging.INFO) is None
        finally:
            logging.getLogger().removeHandler(extra)
        access.addFilter(lambda record: True)
        try:
            assert direct_handler(access, logging.INFO) is None
        finally:
            access.filters.clear()
