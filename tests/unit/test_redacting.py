"""lichen.redacting: the redaction plan on log fields and on what a request carries."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
from pathlib import Path

import pytest

from lichen.errors import ConfigError
from lichen.logs import active_redaction, configure, get_logger, set_redaction
from lichen.redacting import (
    LINE_FIELDS,
    REDACTED,
    Hashed,
    Redaction,
    line_fields,
    load_redaction,
    parse_rules,
    read_salt,
    request_tokens_json,
    rules_text,
)
from lichen.spec.models import ObservabilitySpec

SALT = bytes(range(32))
RULES = parse_rules("hash:body:user_id,hash:query:user_id,hash:header:x-user-id,drop:body:email")


def expected_token(value: str, salt: bytes = SALT) -> str:
    return "h_" + hmac.new(salt, value.encode(), hashlib.sha256).hexdigest()[:16]


@pytest.fixture
def lines():
    """The root logger into a buffer with a plan; yields a function that sets the plan and gives the lines."""
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, active_redaction())

    def configured(plan: Redaction):
        configure("debug", stream=stream, redaction=plan)
        return lambda: [json.loads(line) for line in stream.getvalue().splitlines()]

    yield configured
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    set_redaction(saved[2])


def test_a_hashed_field_is_an_hmac_token_stable_across_plans_and_types() -> None:
    one, two = Redaction(RULES, SALT), Redaction(RULES, SALT)
    assert one.token("u-42") == two.token("u-42") == expected_token("u-42")
    assert one.token(42) == one.token("42")  # a JSON number and a query string join
    assert Redaction(RULES, b"x" * 32).token("u-42") != one.token("u-42")  # another app's salt: another token


def test_log_fields_are_hashed_dropped_or_kept_and_nothing_is_copied_when_none_match() -> None:
    plan = Redaction(RULES, SALT)
    fields = {"order": 7, "route": "/buy"}
    assert plan.fields(fields) is fields
    out = plan.fields({"user_id": "u-42", "email": "a@b.c", "X-User-Id": "u-42", "n": 1})
    assert out == {"user_id": expected_token("u-42"), "X-User-Id": expected_token("u-42"), "n": 1}


def test_nested_dicts_and_lists_are_redacted_at_any_depth() -> None:
    plan = Redaction(RULES, SALT)
    body = {"items": [{"user_id": "u-1", "sku": "a"}], "meta": {"email": "x@y.z", "authorization": "Bearer t0k"}}
    out = plan.fields({"body": body})
    assert out["body"] == {"items": [{"user_id": expected_token("u-1"), "sku": "a"}],
                           "meta": {"authorization": REDACTED}}
    assert body["meta"]["email"] == "x@y.z"  # the caller's data is never changed


def test_a_token_is_never_hashed_twice() -> None:
    plan = Redaction(RULES, SALT)
    token = plan.token("u-42")
    assert isinstance(token, Hashed)
    assert plan.fields({"user_id": token})["user_id"] == token


def test_without_a_salt_a_hash_rule_drops_its_field() -> None:
    plan = Redaction(RULES, None)
    assert plan.unsalted and not plan.requests
    assert plan.fields({"user_id": "u-42", "n": 1}) == {"n": 1}


def test_the_default_plan_drops_credential_headers_and_costs_nothing_per_request() -> None:
    plan = Redaction()
    assert {("drop", "header", "authorization"), ("drop", "header", "cookie"), ("drop", "header", "x_api_key")} \
        <= set(plan.rules)
    assert not plan.requests  # no request is looked at
    assert plan.fields({"headers": {"X-Api-Key": "k", "Cookie": "c"}}) == {"headers": {"X-Api-Key": REDACTED,
                                                                                       "Cookie": REDACTED}}


def test_request_fields_come_from_headers_query_and_json_body() -> None:
    plan = Redaction(RULES, SALT)
    assert plan.requests
    headers = [(b"x-user-id", b"u-h"), (b"authorization", b"Bearer secret")]
    tokens = plan.request_fields(headers, b"a=1&user_id=u-q", None)
    assert tokens == {"x_user_id": expected_token("u-h"), "user_id": expected_token("u-q")}
    assert plan.request_fields([], b"", b'{"order": {"user_id": "u-b", "email": "e@x"}}') == \
        {"user_id": expected_token("u-b")}
    assert plan.request_fields([], b"a=1", b'{"order": 1}') is None
    assert plan.request_fields([], b"", b"not json user_id") is None


def test_request_tokens_json_is_what_the_json_encoder_writes() -> None:
    tokens = {"user_id": Hashed("h_0123456789abcdef")}
    assert json.loads("{" + request_tokens_json(tokens)[1:] + "}") == tokens
    assert request_tokens_json(None) == ""


def test_every_line_of_a_configured_process_goes_through_the_plan(lines) -> None:
    read = lines(Redaction(RULES, SALT))
    get_logger("shop").info("scored", user_id="u-42", score=0.9)
    logging.getLogger("shop").info("plain", extra={"email": "a@b.c", "n": 1})
    scored, plain = read()
    assert scored["user_id"] == expected_token("u-42") and scored["score"] == 0.9
    assert "email" not in plain and plain["n"] == 1


def test_rules_text_round_trips_and_bad_text_names_the_entry() -> None:
    assert parse_rules(rules_text(RULES)) == RULES
    with pytest.raises(ValueError, match="'hash:cookies:x'"):
        parse_rules("hash:query:a,hash:cookies:x")


def test_the_spec_field_gives_rules_and_refuses_a_request_line_field() -> None:
    spec = ObservabilitySpec(redact=["user_id", {"field": "email", "where": ["body"], "action": "drop"}])
    assert spec.redact_rules() == (("hash", "body", "user_id"), ("hash", "query", "user_id"),
                                   ("hash", "header", "user_id"), ("drop", "body", "email"))
    with pytest.raises(ValueError, match="every request line writes"):
        ObservabilitySpec(redact=["status"])
    with pytest.raises(ValueError, match="listed twice"):
        ObservabilitySpec(redact=["user-id", "user_id"])


def test_a_bad_salt_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "redact.salt"
    with pytest.raises(ConfigError, match=str(missing)):
        load_redaction("hash:query:user_id", missing)
    missing.write_text("short\n")
    with pytest.raises(ConfigError, match="not a redaction salt"):
        read_salt(missing)
    missing.write_text(SALT.hex() + "\n")
    assert load_redaction("hash:query:user_id", missing).salt == SALT
    assert load_redaction("drop:query:user_id", tmp_path / "absent").salt is None  # no hash rule: no salt read


@pytest.mark.parametrize("name", ["client_ip", "reason", "exc_info", "Client-IP", "status", "ts"])
def test_a_rule_may_not_name_a_field_a_request_line_writes(name: str) -> None:
    """The gateway's request_denied writes client_ip and reason, the SDK's request_failed error and traceback, and
    the logging call takes exc_info: a token by one of those names would collide with the line's own."""
    with pytest.raises(ValueError, match=f"hash:query:{name}: .*every request line writes itself"):
        parse_rules(f"hash:query:user_id,hash:query:{name}")
    with pytest.raises(ValueError, match="every request line writes itself"):
        ObservabilitySpec(redact=[{"field": name, "action": "drop"}])


def test_a_request_lines_own_fields_win_over_tokens_of_the_same_name() -> None:
    """A plan built from rules nobody validated (a hand-written config) still cannot replace a line's field or
    collide with a keyword of the logging call: the tokens merge into one mapping after the line's own."""
    plan = Redaction((("hash", "query", "client_ip"), ("hash", "query", "exc_info"), ("hash", "query", "ts"),
                      ("hash", "header", "Status"), ("hash", "query", "user_id")), SALT)
    assert [rule for rule in plan.rules if rule[0] == "hash"] == [("hash", "query", "user_id")]  # the others left out
    assert plan.fields({"status": 404, "client_ip": "10.0.0.9"}) == {"status": 404, "client_ip": "10.0.0.9"}
    assert plan.request_fields([(b"status", b"201")], b"client_ip=1.2.3.4&exc_info=x&ts=y&user_id=u-1") == \
        {"user_id": expected_token("u-1")}
    tokens = {name: plan.token(value) for name, value in (("client_ip", "1.2.3.4"), ("exc_info", "x"), ("ts", "y"),
                                                           ("user_id", "u-1"))}  # from any other source
    own = {"status": 404, "client_ip": "10.0.0.9"}
    merged = line_fields(own, tokens)
    assert merged == {"status": 404, "client_ip": "10.0.0.9", "user_id": expected_token("u-1")}
    assert list(merged)[:2] == ["status", "client_ip"] and own == {"status": 404, "client_ip": "10.0.0.9"}
    assert line_fields(own, None) is own
    assert json.loads("{" + request_tokens_json(tokens)[1:] + "}") == {"user_id": expected_token("u-1")}
    assert {"client_ip", "reason", "exc_info", "error", "traceback", "latency_ms"} <= LINE_FIELDS


def test_a_body_nested_past_the_recursion_limit_gives_no_token_and_no_error() -> None:
    plan = Redaction(RULES, SALT)
    deep = b'{"user_id": "u-b", "items": ' + b"[" * 60_000  # under 64 KiB, so it is searched
    assert plan.request_fields([], b"", deep) is None
    assert plan.request_fields([], b"user_id=u-q", deep) == {"user_id": expected_token("u-q")}
    closed = b'{"user-id": "u-b", "deep": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"  # valid JSON, too deep to parse
    assert plan.request_fields([], b"", closed) is None
