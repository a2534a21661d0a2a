"""observability.redact on real log output: a real service behind the real gateway under `lichen up`, requests
with user ids in the body, the query and a header, then the log files read back."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
from pathlib import Path

import httpx
import pytest
import yaml
from cp_harness import FAST_PROBES, HERE, App, wait_until

pytestmark = pytest.mark.slow
USER = "user-8d1c-alice"
EMAIL = "alice.8d1c@example.com"
BEARER = "Bearer tk-8d1c-credential"
API_KEY = "ak-8d1c-credential"
REDACT = ["user_id", {"field": "x-user-id", "where": ["header"]}, {"field": "email", "action": "drop"}]


def _lines(path: Path) -> list[dict]:
    found = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            found.append(json.loads(line))
        except ValueError:
            continue
    return found


def test_user_ids_are_hashed_joinably_and_credentials_dropped_in_every_log_line(make_app) -> None:
    app: App = make_app()
    shutil.copy(HERE / "secsvc.py", app.dir / "secsvc.py")
    app.write_spec(shop={"entrypoint": "secsvc:Shop", "termination_grace_s": 2, "probes": FAST_PROBES})
    spec = yaml.safe_load((app.dir / "lichen.yaml").read_text())
    spec["observability"] = {"redact": REDACT}
    (app.dir / "lichen.yaml").write_text(yaml.safe_dump(spec))
    app.up()
    gateway = f"http://127.0.0.1:{app.gateway_port}"
    headers = {"X-User-Id": USER, "Authorization": BEARER, "X-Api-Key": API_KEY, "Cookie": f"session={USER}"}
    for _ in range(2):
        bought = httpx.post(f"{gateway}/shop/buy", params={"user_id": USER}, headers=headers,
                            json={"user_id": USER, "email": EMAIL})
        assert bought.status_code == 200, bought.text
        assert httpx.get(f"{gateway}/shop/lookup", params={"user_id": USER}, headers=headers).status_code == 200
        assert httpx.get(f"{gateway}/nowhere", params={"user_id": USER}, headers=headers).status_code == 404

    salt = bytes.fromhex((app.dir / ".lichen" / "redact.salt").read_text().strip())
    token = "h_" + hmac.new(salt, USER.encode(), hashlib.sha256).hexdigest()[:16]
    logs = app.dir / ".lichen" / "logs"

    def written() -> dict[str, list[dict]] | None:
        by_file = {path.name: _lines(path) for path in logs.glob("*.log")}
        events = [line.get("event") for lines in by_file.values() for line in lines]
        return by_file if events.count("bought") == 2 and events.count("request_denied") == 2 else None

    by_file = wait_until(written, "the service's and the gateway's lines")
    replica = next(name for name in by_file if name.startswith("shop-"))
    requests = [line for line in by_file[replica] if line["event"] == "request" and line["path"] != "/uses-secret"]
    assert len(requests) == 4
    assert all(line["user_id"] == token and line["x_user_id"] == token for line in requests)  # stable, joinable
    bought = [line for line in by_file[replica] if line["event"] == "bought"]
    assert all(line["user_id"] == token and line["order"] == {"user_id": token} and "email" not in line
               for line in bought)
    assert [line["user_id"] for line in by_file[replica] if line["event"] == "looked_up"] == [token, token]
    denied = [line for line in by_file["gateway.log"] if line["event"] == "request_denied"]
    assert [(line["user_id"], line["x_user_id"]) for line in denied] == [(token, token)] * 2  # the same token
    text = "\n".join(path.read_text(errors="replace") for path in logs.glob("*.log*"))
    for raw in (USER, EMAIL, BEARER, API_KEY, "tk-8d1c", "ak-8d1c", "alice"):
        assert raw not in text, f"{raw!r} reached a log"
    assert "Authorization" not in text and "x_api_key" not in text
