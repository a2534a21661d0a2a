"""lichen.logs: one structured style, an event name plus fields on one JSON line."""

from __future__ import annotations

import io
import json
import logging

import pytest

from lichen.logs import (
    REQUEST_ID,
    Event,
    JsonFormatter,
    as_event,
    configure,
    get_logger,
    is_secret_field,
    log_event,
    snake_case,
)


@pytest.fixture
def lines():
    """Configure the root logger into a buffer; yields a function returning the parsed lines so far."""
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure("debug", stream=stream, static_fields={"service": "api"})
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_an_event_is_one_json_line_with_a_timestamp_first_and_its_fields(lines) -> None:
    get_logger("lichen.test").info("replica_started", replica="api-1", pid=12, grace_s=2.5)
    [line] = lines()
    assert list(line)[:4] == ["ts", "level", "logger", "event"]
    assert line["ts"].endswith("Z") and line["ts"][10] == "T" and len(line["ts"]) == len("2026-11-26T18:49:05.149Z")
    assert line == {"ts": line["ts"], "level": "info", "logger": "lichen.test", "event": "replica_started",
                    "service": "api", "replica": "api-1", "pid": 12, "grace_s": 2.5}


def test_log_event_on_a_plain_logger_and_levels(lines) -> None:
    logger = logging.getLogger("lichen.test.plain")
    log_event(logger, "reload_failed", level=logging.ERROR, error="bad yaml")
    get_logger("lichen.test.plain").debug("probe", ok=True)
    assert [(r["level"], r["event"]) for r in lines()] == [("error", "reload_failed"), ("debug", "probe")]
    assert lines()[0]["error"] == "bad yaml"


def test_a_foreign_record_has_its_message_as_the_event_and_extras_as_fields(lines) -> None:
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 42, extra={"color_message": "x", "k": 3})
    [line] = lines()
    assert line["event"] == "Started server process [42]" and line["k"] == 3 and "color_message" not in line


def test_an_exception_is_an_error_and_a_traceback_field_on_one_line(lines) -> None:
    try:
        raise ValueError("bad value")
    except ValueError:
        get_logger("lichen.test").exception("round_failed", round="scrape")
    [line] = lines()
    assert line["level"] == "error" and line["error"] == "ValueError: bad value"
    assert "Traceback" in line["traceback"] and 'raise ValueError("bad value")' in line["traceback"]


def test_the_current_request_id_is_on_every_line_logged_meanwhile(lines) -> None:
    token = REQUEST_ID.set("req-7")
    try:
        logging.getLogger("shop").info("computing")
    finally:
        REQUEST_ID.reset(token)
    logging.getLogger("shop").info("after")
    assert [r.get("request_id") for r in lines()] == ["req-7", None]


@pytest.mark.parametrize("name", ["token", "bearer_token", "secret", "client_secret", "password", "db_password",
                                  "authorization", "Authorization", "cookie", "api_key", "openai_api_key", "key",
                                  "credentials"])
def test_secret_fields_are_redacted(lines, name: str) -> None:
    get_logger("lichen.test").warning("login", **{name: "hunter2", "key_id": "k1"})
    [line] = lines()
    assert line[name] == "[redacted]" and line["key_id"] == "k1"
    assert "hunter2" not in json.dumps(line)


@pytest.mark.parametrize("name", ["key_id", "keys", "tokens", "token_count_total", "secret_names", "path"])
def test_names_that_merely_mention_a_secret_word_are_kept(name: str) -> None:
    assert is_secret_field(name) is (name in ("token_count_total", "secret_names"))


def test_reserved_field_names_are_refused(lines) -> None:
    with pytest.raises(TypeError, match="'event' is reserved"):
        get_logger("lichen.test").info("x", event="y")


def test_a_plain_handler_sees_the_event_and_fields_as_text_and_as_event_gives_data(caplog) -> None:
    with caplog.at_level(logging.INFO, logger="lichen.test"):
        get_logger("lichen.test").info("rollout_started", service="api", reason="spec changed", token="t")
    [record] = caplog.records
    assert record.getMessage() == 'rollout_started service=api reason="spec changed" token=[redacted]'
    event = as_event(record)
    assert event.name == "rollout_started" and event.fields["service"] == "api"


def test_nothing_is_built_when_the_level_is_off(lines, monkeypatch: pytest.MonkeyPatch) -> None:
    logging.getLogger("lichen.quiet").setLevel(logging.WARNING)
    built: list[str] = []
    monkeypatch.setattr(Event, "__init__", lambda self, name, fields: built.append(name))
    try:
        get_logger("lichen.quiet").info("chatty")
    finally:
        logging.getLogger("lichen.quiet").setLevel(logging.NOTSET)
    assert built == [] and lines() == []


def test_the_formatter_alone() -> None:
    record = logging.makeLogRecord({"name": "x", "levelname": "WARNING", "msg": Event("slow", {"ms": 3})})
    data = json.loads(JsonFormatter().format(record))
    assert data["event"] == "slow" and data["ms"] == 3 and data["level"] == "warning"


def test_kinds_become_snake_case_event_names() -> None:
    assert [snake_case(k) for k in ("CrashLoopBackOff", "OOMKilled", "Started", "RolloutStarted", "reload_failed")] == [
        "crash_loop_back_off", "oom_killed", "started", "rollout_started", "reload_failed"]


def test_configure_takes_over_a_logger_a_library_configured_on_its_own() -> None:
    library = logging.getLogger("uvicorn")
    library.addHandler(logging.StreamHandler(io.StringIO()))
    library.propagate = False
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure("info", stream=stream)
        logging.getLogger("uvicorn.error").info("Started server process [%d]", 7)
        assert library.propagate and not library.handlers
        [line] = [json.loads(text) for text in stream.getvalue().splitlines()]
        assert line["event"] == "Started server process [7]"
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
