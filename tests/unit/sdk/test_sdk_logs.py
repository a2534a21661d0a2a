"""JSON log lines."""

from __future__ import annotations

import io
import json
import logging

import pytest

from lichen.sdk.logs import REQUEST_ID, JsonFormatter, configure_logging


def test_a_record_is_one_json_line_with_extras_the_replicas_fields_and_the_current_request_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LICHEN_SERVICE", "recommender")
    monkeypatch.setenv("LICHEN_REPLICA", "recommender-1")
    monkeypatch.delenv("LICHEN_REVISION", raising=False)
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    token = REQUEST_ID.set("abc")
    try:
        configure_logging("info", stream=stream)
        logging.getLogger("x").info("hi %s", "there", extra={"k": 3})
    finally:
        REQUEST_ID.reset(token)
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    line = stream.getvalue()
    assert line.count("\n") == 1
    data = json.loads(line)
    assert data["event"] == "hi there" and data["level"] == "info" and data["k"] == 3
    assert data["service"] == "recommender" and data["replica"] == "recommender-1" and "revision" not in data
    assert data["request_id"] == "abc"
    assert data["ts"].endswith("Z") and data["ts"][10] == "T"


def test_exceptions_are_one_field_not_extra_lines() -> None:
    formatter = JsonFormatter(static_fields={})
    try:
        raise ValueError("bad")
    except ValueError:
        import sys

        record = logging.makeLogRecord({"msg": "failed", "exc_info": sys.exc_info()})
    line = formatter.format(record)
    assert "\n" not in line and json.loads(line)["error"] == "ValueError: bad"
    assert 'raise ValueError("bad")' in json.loads(line)["traceback"]


def test_configure_logging_routes_everything_through_json() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging("debug", stream=stream)
        logging.getLogger("uvicorn.error").info("from uvicorn")
        logging.getLogger("user.code").warning("from the user")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(r["logger"], r["level"]) for r in lines] == [("uvicorn.error", "info"), ("user.code", "warning")]
