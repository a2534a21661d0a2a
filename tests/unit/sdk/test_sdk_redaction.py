"""A replica's request lines carry hashed tokens of the redacted fields a request holds, and its own secrets are
written as *** in whatever it prints."""

from __future__ import annotations

import io
import json
import logging

import pytest
from pydantic import BaseModel

from lichen import Service, endpoint
from lichen.logs import TRACE, Event, JsonFormatter, active_redaction, configure, get_logger, set_redaction
from lichen.redacting import Hashed, Redaction, parse_rules
from lichen.errors import ConfigError
from lichen.sdk.logs import ACCESS_LOGGER, request_line
from lichen.sdk.masking import MASK, MaskedStream, mask_output, masked_forms
from lichen.sdk.settings import ReplicaSettings
from lichen.testing import ServiceClient

PLAN = Redaction(parse_rules("hash:body:user_id,hash:query:user_id,hash:header:x-user-id,drop:body:email"),
                 bytes(range(32)))


class Order(BaseModel):
    user_id: str
    email: str = ""


class Shop(Service):
    @endpoint("/buy", method="POST")
    async def buy(self, order: Order) -> dict:
        get_logger("shop").info("bought", user_id=order.user_id, email=order.email, order=order.model_dump())
        return {"ok": True}

    @endpoint("/fail", method="POST")
    async def fail(self) -> dict:
        raise RuntimeError("out of stock")


@pytest.fixture
def plan_lines():
    """The root logger into a buffer; call it with a plan, then call what it returns for the lines."""
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, active_redaction())

    def configured(plan: Redaction):
        configure("info", stream=stream, redaction=plan)
        return lambda: [json.loads(line) for line in stream.getvalue().splitlines()]

    yield configured
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    set_redaction(saved[2])


@pytest.fixture
def lines(plan_lines):
    return plan_lines(PLAN)


def test_the_direct_request_line_with_tokens_is_the_line_the_logging_path_writes() -> None:
    formatter = JsonFormatter({"service": "shop"})
    tokens = {"user_id": PLAN.token("u-1"), "x_user_id": PLAN.token("u-2")}
    fields = {"request_id": "r1", "method": "POST", "path": "/buy", "endpoint": "/buy", "status": 200,
              "latency_ms": 1.25, **tokens}
    record = logging.LogRecord(ACCESS_LOGGER, logging.INFO, __file__, 1, Event("request", fields), None, None)
    record.created = 0.0
    assert request_line(formatter, 0.0, "r1", "POST", "/buy", "/buy", 200, 1.25, tokens) == formatter.format(record)


def test_the_direct_request_line_with_trace_ids_is_the_line_the_logging_path_writes() -> None:
    class Ids:
        def log_ids(self) -> tuple[str, str]:
            return "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"

    formatter = JsonFormatter({"service": "shop"})
    fields = {"request_id": "r1", "method": "GET", "path": "/x", "endpoint": "/x", "status": 200, "latency_ms": 1.0}
    record = logging.LogRecord(ACCESS_LOGGER, logging.INFO, __file__, 1, Event("request", fields), None, None)
    record.created = 0.0
    token = TRACE.set(Ids())
    try:
        generic = formatter.format(record)
    finally:
        TRACE.reset(token)
    assert json.loads(generic)["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert request_line(formatter, 0.0, "r1", "GET", "/x", "/x", 200, 1.0, None, Ids().log_ids()) == generic


def test_a_request_line_carries_the_token_and_no_line_the_raw_value(lines) -> None:
    with ServiceClient(Shop) as client:
        for _ in range(2):
            client.post("/buy?user_id=u-query", json={"user_id": "u-body", "email": "ann@example.com"},
                        headers={"X-User-Id": "u-header", "Authorization": "Bearer tok-123"})
    text = "\n".join(json.dumps(line) for line in lines() if line["logger"] != "httpx")  # the test's client
    for raw in ("u-query", "u-body", "u-header", "ann@example.com", "tok-123"):
        assert raw not in text
    requests = [line for line in lines() if line["event"] == "request"]
    bought = [line for line in lines() if line["event"] == "bought"]
    assert len(requests) == len(bought) == 2
    assert requests[0]["user_id"] == requests[1]["user_id"] == PLAN.token("u-query")  # query before body
    assert requests[0]["x_user_id"] == PLAN.token("u-header")
    assert bought[0]["user_id"] == PLAN.token("u-body") and "email" not in bought[0]
    assert bought[0]["order"] == {"user_id": PLAN.token("u-body")}


def test_masked_forms_cover_a_value_escaped_in_a_json_line() -> None:
    forms = masked_forms(["p\"ss\\wörd", "abc"])
    assert "p\"ss\\wörd" in forms and json.dumps("p\"ss\\wörd")[1:-1] in forms
    assert "abc" not in forms  # too short to mask
    out = io.StringIO()
    stream = MaskedStream(out, forms)
    stream.write(json.dumps({"env": "p\"ss\\wörd"}) + " and raw p\"ss\\wörd\n")
    assert "ss" not in out.getvalue() and out.getvalue().count(MASK) == 2
    assert stream.getvalue() == out.getvalue()  # everything else is the stream's own


def test_mask_output_wraps_stdout_and_stderr_once(monkeypatch) -> None:
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    monkeypatch.setattr("sys.stderr", err)
    assert mask_output(["API_TOKEN", "UNSET"], {"API_TOKEN": "tok-9876"}) == ("tok-9876",)
    assert mask_output(["API_TOKEN"], {"API_TOKEN": "tok-9876"})  # a second call does not wrap twice
    import sys

    print("token is tok-9876")
    print("error tok-9876", file=sys.stderr)
    assert isinstance(sys.stdout, MaskedStream) and not isinstance(sys.stdout._stream, MaskedStream)
    assert out.getvalue() == "token is ***\n" and err.getvalue() == "error ***\n"
    assert mask_output([], {}) == ()


class CollidingTokens(Redaction):
    """A plan whose request tokens include names the line writes itself (as a future source of tokens might)."""

    __slots__ = ()

    def request_fields(self, headers, query, body=None):  # type: ignore[no-untyped-def]
        names = ("exc_info", "status", "error", "traceback", "event")
        found = super().request_fields(headers, query, body) or {}
        return {**{name: Hashed("h_collides") for name in names}, **found}


@pytest.mark.parametrize("colliding", [False, True], ids=["hand-built plan", "colliding tokens"])
def test_a_token_named_like_exc_info_or_a_line_field_leaves_the_failure_line_whole(plan_lines, colliding) -> None:
    """``request_failed`` is logged with ``exc_info=``: a token by that name (a rule nobody validated) once raised
    TypeError in the wrapper's ``finally``, and the failure's line was lost. A hand-built plan leaves such a rule
    out, and whatever tokens a line is handed, its own fields win and go as one mapping."""
    rules = (("hash", "query", "exc_info"), ("hash", "query", "status"), ("hash", "query", "user_id"))
    plan = (CollidingTokens if colliding else Redaction)(rules, bytes(range(32)))
    read = plan_lines(plan)
    with ServiceClient(Shop) as client:
        assert client.post("/fail?exc_info=1&status=201&user_id=u-9").status_code == 500
        assert client.post("/buy?exc_info=1&user_id=u-9", json={"user_id": "u-b"}).status_code == 200
    failed = [line for line in read() if line["event"] == "request_failed"]
    assert len(failed) == 1 and failed[0]["error"] == "RuntimeError: out of stock" and "out of stock" in \
        failed[0]["traceback"]
    assert failed[0]["status"] == 500 and failed[0]["user_id"] == plan.token("u-9") and "exc_info" not in failed[0]
    request = [line for line in read() if line["event"] == "request"]
    assert len(request) == 1 and request[0]["status"] == 200 and request[0]["user_id"] == plan.token("u-9")
    assert "exc_info" not in request[0]


def test_a_replica_refuses_rules_named_like_a_request_line_field() -> None:
    with pytest.raises(ConfigError, match="env LICHEN_REDACT: hash:query:exc_info: 'exc_info' is a field every"):
        ReplicaSettings.from_env({"LICHEN_REDACT": "hash:query:user_id,hash:query:exc_info"})
    with pytest.raises(ConfigError, match="'client-ip' is a field every request line writes"):
        ReplicaSettings(redact=(("hash", "header", "client-ip"),))
