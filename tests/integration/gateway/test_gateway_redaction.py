"""A standalone `lichen gateway` writes the hashed token of a redacted field in its request_denied lines, never the
raw value; a config reload changes the rules live, and a salt file it cannot read keeps the last good rules."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import httpx
import pytest
from gateway_harness import GatewayProcess
from waiting import wait_until

pytestmark = pytest.mark.slow
USER = "user-51c3-bob"
SALT = bytes(range(100, 132))


def test_request_denied_lines_carry_tokens_and_reloads_change_the_rules(tmp_path: Path) -> None:
    salt_file = tmp_path / "redact.salt"
    salt_file.write_text(SALT.hex() + "\n")
    token = "h_" + hmac.new(SALT, USER.encode(), hashlib.sha256).hexdigest()[:16]
    gateway = GatewayProcess({"redact": "hash:query:user_id,hash:header:x-user-id", "redact_salt_file": str(salt_file)},
                             tmp_path)
    try:
        def denied(count: int) -> list[dict]:
            httpx.get(f"{gateway.url}/nowhere", params={"user_id": USER},
                      headers={"X-User-Id": USER, "Authorization": f"Bearer {USER}"})
            return wait_until(lambda: len(lines := gateway.log_events("request_denied")) >= count and lines,
                              f"request_denied line {count}", 10)

        first = denied(1)[-1]
        assert first["reason"] == "no_route" and first["user_id"] == first["x_user_id"] == token

        gateway.update(generation="g-2", redact="drop:query:user_id")
        wait_until(lambda: httpx.get(f"{gateway.url}/-/config").json() == {"generation": "g-2"}, "the reload", 10)
        second = denied(2)[-1]
        assert "user_id" not in second and "x_user_id" not in second

        gateway.update(generation="g-3", redact="hash:query:user_id", redact_salt_file=str(tmp_path / "missing"))
        wait_until(lambda: httpx.get(f"{gateway.url}/-/config").json() == {"generation": "g-3"}, "the reload", 10)
        failed = gateway.log_events("reload_failed")
        assert failed and str(tmp_path / "missing") in failed[-1]["error"]
        third = denied(3)[-1]
        assert "user_id" not in third  # the last good rules (drop) still apply

        assert USER not in gateway.log_text()
    finally:
        gateway.stop()


def test_a_salt_file_it_cannot_read_stops_the_gateway_at_start_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "no.salt"
    gateway = GatewayProcess({"redact": "hash:query:user_id", "redact_salt_file": str(missing)}, tmp_path,
                             wait=False)
    assert gateway.process.wait(timeout=30) != 0
    text = gateway.log_text()
    gateway.stop()
    assert f"{missing}: cannot read the redaction salt" in text and "Traceback" not in text


def test_a_rule_named_like_a_request_line_field_is_refused_and_denials_keep_their_status(tmp_path: Path) -> None:
    """``client_ip`` and ``reason`` are request_denied's own fields: a token by either name once made every refusal a
    500. A config naming one is refused at start and on reload (the last good rules stay), naming the entry."""
    salt_file = tmp_path / "redact.salt"
    salt_file.write_text(SALT.hex() + "\n")
    refused = GatewayProcess({"redact": "hash:query:client_ip", "redact_salt_file": str(salt_file)}, tmp_path,
                             wait=False)
    assert refused.process.wait(timeout=30) != 0
    text = refused.log_text()
    refused.stop()
    assert "redact: " in text and "hash:query:client_ip: 'client_ip' is a field every request line writes" in text
    assert "Traceback" not in text

    gateway = GatewayProcess({"redact": "hash:query:user_id", "redact_salt_file": str(salt_file)}, tmp_path)
    try:
        def watching() -> bool:  # the gateway watches its file only some time after it says it listens
            if httpx.get(f"{gateway.url}/-/config").json() == {"generation": "g-1"}:
                return True
            gateway.update(generation="g-1")  # written again (a new mtime) until a reload shows it
            return False

        wait_until(watching, "the gateway watching its config", 10)
        gateway.update(generation="g-2", redact="hash:query:user_id,hash:header:reason")
        wait_until(lambda: gateway.log_events("reload_failed"), "the refused reload", 10)
        assert "'reason' is a field every request line writes" in gateway.log_events("reload_failed")[-1]["error"]
        with httpx.Client(base_url=gateway.url) as client:  # one kept-alive connection for every request
            for _ in range(3):
                answer = client.get("/nowhere", params={"user_id": USER, "client_ip": "6.6.6.6"},
                                    headers={"Reason": "r-1"})
                assert answer.status_code == 404 and answer.headers.get("connection") != "close"
        lines = wait_until(lambda: len(lines := gateway.log_events("request_denied")) >= 3 and lines, "3 lines", 10)
        assert all(line["reason"] == "no_route" and line["client_ip"] == "127.0.0.1" for line in lines)
        assert lines[-1]["user_id"] == "h_" + hmac.new(SALT, USER.encode(), hashlib.sha256).hexdigest()[:16]
    finally:
        gateway.stop()
