"""A real `lichen serve` replica with a body redaction rule keeps answering, and logging, whatever body comes.

A JSON body nested deeper than the parser recurses (64 KiB of ``[``) once raised RecursionError while the
request line was built, inside the ASGI wrapper's ``finally``: the line was lost and uvicorn logged "Exception in
ASGI application" with a traceback, once per such request.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from pathlib import Path

import pytest
from sdk_replicas import Replica, wait_until

pytestmark = pytest.mark.slow
SALT = bytes(range(7, 39))


def test_a_body_nested_past_the_recursion_limit_gets_its_answer_and_its_request_line(
        serve_factory: Callable[..., Replica], tmp_path: Path) -> None:
    salt_file = tmp_path / "redact.salt"
    salt_file.write_text(SALT.hex() + "\n")
    replica = serve_factory("echo_service:Echo", env={"LICHEN_REDACT": "hash:body:user_id",
                                                      "LICHEN_REDACT_SALT_FILE": str(salt_file)})
    deep = b'{"text": "hi", "user_id": "u-deep", "nested": ' + b"[" * 60_000  # under 64 KiB: it is searched
    answers = [replica.client.post("/echo", content=deep, headers={"Content-Type": "application/json",
                                                                   "X-Request-ID": f"deep-{i}"})
               for i in range(3)]
    assert [answer.status_code for answer in answers] == [400] * 3  # FastAPI's own answer to a body it cannot parse
    fine = replica.client.post("/echo", json={"text": "hi", "user_id": "u-1"}, headers={"X-Request-ID": "fine"})
    assert fine.status_code == 200

    lines = wait_until(lambda: (found := {r["request_id"]: r for r in replica.logs() if r.get("event") == "request"})
                       and "fine" in found and found, "the request lines")
    for i in range(3):
        line = lines[f"deep-{i}"]
        assert line["status"] == 400 and line["path"] == "/echo" and "user_id" not in line  # no token: unparsed
    assert lines["fine"]["user_id"] == "h_" + hmac.new(SALT, b"u-1", hashlib.sha256).hexdigest()[:16]
    text = replica.log_path.read_text()
    assert "Exception in ASGI application" not in text and "RecursionError" not in text and "u-deep" not in text
