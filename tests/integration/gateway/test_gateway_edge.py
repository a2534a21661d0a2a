"""Security at the edge and malformed HTTP, against a real gateway process and backend."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from gateway_harness import LICHEN, Backend, GatewayProcess, wait_until

from lichen.gateway.keys import KeyStore

pytestmark = pytest.mark.slow
JWT_SECRET = "test-secret-that-is-long-enough-for-hs256"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("edge")
    backend = Backend("e1", tmp).wait()
    keys_db = tmp / "keys.db"
    common = {"services": {"b": {"endpoints": [backend.endpoint()]}}, "keys_db": str(keys_db)}
    secured = GatewayProcess({
        **common,
        "routes": [{"prefix": "/api", "service": "b", "strip_prefix": True},
                   {"prefix": "/admin", "service": "b", "strip_prefix": True}],
        "settings": {"auth": {"api_keys": True, "jwt": {"algorithm": "HS256", "secret_env": "GW_JWT_SECRET"}},
                     "rate_limit": {"per_key_rps": 5, "burst": 5}},
    }, tmp, env={"GW_JWT_SECRET": JWT_SECRET}, wait=False)
    open_gw = GatewayProcess({
        **common,
        "routes": [{"prefix": "/", "service": "b"}],
        # No per-IP rate limit here: every client of these tests is 127.0.0.1, and one keep-alive client in a
        # tight loop sends ~2000 req/s, so a 1000 rps limit answered the malformed-HTTP test's own healthy
        # client with 429. Per-IP limits are tested on "limited".
        "settings": {"limits": {"max_body_bytes": 1000, "max_header_bytes": 2048}},
        "header_timeout_s": 1.0,
    }, tmp, wait=False)
    limited = GatewayProcess({**common, "routes": [{"prefix": "/", "service": "b"}],
                              "settings": {"rate_limit": {"per_ip_rps": 2, "burst": 3}}}, tmp, wait=False)
    for gateway in (secured, open_gw, limited):
        gateway.wait()
    try:
        yield {"tmp": tmp, "keys_db": keys_db, "secured": secured, "open": open_gw, "limited": limited, "backend": backend}
    finally:
        for gateway in (secured, open_gw, limited):
            gateway.stop()
        backend.kill()


def lichen_keys(*args: str) -> dict:
    result = subprocess.run([*LICHEN, "keys", *args, "--json"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_api_keys_scopes_expiry_and_revocation(site) -> None:
    url = site["secured"].url
    db = str(site["keys_db"])
    key = lichen_keys("create", "mobile", "--scope", "/api", "--db", db)
    token = key["token"]
    assert token.startswith("lk_") and key["id"] in token
    assert site["keys_db"].read_bytes().find(token.split("_", 2)[2].encode()) == -1  # only the hash is stored
    assert httpx.get(f"{url}/api/whoami").status_code == 401
    assert httpx.get(f"{url}/api/whoami", headers={"X-API-Key": "lk_nope_nope"}).status_code == 401
    wait_until(lambda: httpx.get(f"{url}/api/whoami", headers={"Authorization": f"Bearer {token}"}).status_code == 200,
               "key picked up", 20)
    assert httpx.get(f"{url}/admin/whoami", headers={"X-API-Key": token}).status_code == 403
    KeyStore(db).revoke(key["id"])  # what `lichen keys revoke` does (its CLI is covered by the unit tests)
    wait_until(lambda: httpx.get(f"{url}/api/whoami", headers={"X-API-Key": token}).status_code == 401, "revoked", 20)
    _, expired = KeyStore(db).create("old", ["*"], expires_at=time.time() + 1.0)
    time.sleep(1.1)  # the key's own lifetime, not a synchronisation wait
    assert httpx.get(f"{url}/api/whoami", headers={"X-API-Key": expired}).status_code == 401
    log = site["secured"].log_text()
    assert token not in log and "invalid_key" in log and "out_of_scope" in log
    assert site["secured"].metric("lichen_gateway_denied_total", reason="missing_credentials") >= 1


def test_jwt_and_per_key_rate_limit(site) -> None:
    url = site["secured"].url
    good = jwt.encode({"sub": "alice", "exp": int(time.time()) + 600}, JWT_SECRET, algorithm="HS256")
    bad = jwt.encode({"sub": "mallory", "exp": int(time.time()) + 600}, "another-secret-of-sufficient-length!", algorithm="HS256")
    stale = jwt.encode({"sub": "alice", "exp": int(time.time()) - 10}, JWT_SECRET, algorithm="HS256")
    assert httpx.get(f"{url}/api/whoami", headers={"Authorization": f"Bearer {bad}"}).status_code == 401
    assert httpx.get(f"{url}/api/whoami", headers={"Authorization": f"Bearer {stale}"}).status_code == 401
    with httpx.Client() as client:
        statuses = [client.get(f"{url}/api/whoami", headers={"Authorization": f"Bearer {good}"}) for _ in range(15)]
    codes = [r.status_code for r in statuses]
    assert codes[:5] == [200] * 5 and 429 in codes
    assert all(int(r.headers["retry-after"]) >= 1 for r in statuses if r.status_code == 429)
    assert site["secured"].metric("lichen_gateway_rate_limited_total", scope="key") >= 1


def test_per_ip_rate_limit(site) -> None:
    url = site["limited"].url
    with httpx.Client() as client:
        codes = [client.get(f"{url}/whoami").status_code for _ in range(10)]
    assert codes[:3] == [200, 200, 200] and codes.count(429) >= 5
    assert site["limited"].metric("lichen_gateway_rate_limited_total", scope="ip") == codes.count(429)


def test_size_limits(site) -> None:
    url = site["open"].url
    assert httpx.post(f"{url}/echo", content=b"x" * 5000).status_code == 413
    assert httpx.post(f"{url}/echo", content=b"x" * 500).status_code == 200
    assert httpx.get(f"{url}/whoami", headers={"X-Big": "y" * 4000}).status_code == 431

    def chunks():
        for _ in range(10):
            yield b"z" * 300

    try:
        status = httpx.post(f"{url}/echo", content=chunks()).status_code
    except httpx.HTTPError:
        status = 0  # a closed connection is also an acceptable answer mid-upload
    assert status in (413, 0)
    assert site["open"].metric("lichen_gateway_denied_total", reason="body_too_large") >= 2
    assert site["open"].metric("lichen_gateway_denied_total", reason="headers_too_large") >= 1


def raw(port: int, payload: bytes, *, read_s: float = 3.0, close_early: bool = False) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=read_s) as sock:
        try:
            sock.sendall(payload)
        except OSError:
            pass  # the gateway answered and closed before taking everything: read its answer
        if close_early:
            return b""
        data = b""
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            data += b"<stalled>"
        return data


MALFORMED = [
    (b"NOT A REQUEST\r\n\r\n", b"400"),
    (b"GET /whoami HTTP/9.9\r\nHost: a\r\n\r\n", b"400"),
    (b"GET /who ami HTTP/1.1\r\nHost: a\r\n\r\n", b"400"),
    (b"GET /whoami HTTP/1.1\r\nBad Header Name: x\r\n\r\n", b"400"),
    (b"GET /whoami HTTP/1.1\r\nX-Ctl: a\x00b\r\n\r\n", b"400"),
    (b"GET /whoami HTTP/1.1\r\n" + b"X-Many: y\r\n" * 500 + b"\r\n", b"431"),
    (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n\r\n", b"431"),
    (b"GET /whoami HTTP/1.1\r\nX-Endless: " + b"a" * 2_000_000, b"431"),  # a header line that never ends
    (b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", b"400"),
    (b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"400"),
    (b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n", b"400"),
    (b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999\r\n\r\n", b"413"),
]


def test_malformed_http_gets_4xx_or_close_and_never_stalls_other_clients(site) -> None:
    gateway = site["open"]
    stop = threading.Event()
    healthy: list[int] = []

    def normal_client() -> None:
        with httpx.Client(timeout=5.0) as client:
            while not stop.is_set():
                try:
                    healthy.append(client.get(f"{gateway.url}/whoami").status_code)
                except httpx.HTTPError:
                    healthy.append(0)

    thread = threading.Thread(target=normal_client, daemon=True)
    thread.start()
    try:
        for payload, expected in MALFORMED:
            answer = raw(gateway.port, payload)
            assert answer == b"" or answer.split(b" ", 2)[1] == expected, (payload[:60], answer[:80])
        # an optional upgrade (h2c) is answered over HTTP/1.1 without it
        upgraded = raw(gateway.port, b"GET /whoami HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                                     b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
        assert upgraded.startswith(b"HTTP/1.1 200"), upgraded[:80]
        # slowloris: a partial request is cut off by the header timeout (408 or close), not held open
        slow = raw(gateway.port, b"GET /whoami HTTP/1.1\r\nHost: a\r\nX-Slow: ", read_s=5.0)
        assert slow == b"" or slow.startswith(b"HTTP/1.1 408"), slow[:80]
        # many early disconnects: mid-headers, mid-body, and while the upstream is still working
        for _ in range(20):
            raw(gateway.port, b"GET /whoami HTTP/1.1\r\nHo", close_early=True)
            raw(gateway.port, b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nabc", close_early=True)
            raw(gateway.port, b"GET /slow?ms=200 HTTP/1.1\r\nHost: a\r\n\r\n", close_early=True)
        count = len(healthy)
        wait_until(lambda: len(healthy) >= count + 20, "normal client keeps going", 20)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert healthy and set(healthy) == {200}, set(healthy)
    assert gateway.process.poll() is None
    # clients that hung up mid-request leave nothing behind: in-flight goes back to zero
    wait_until(lambda: gateway.metric("lichen_gateway_inflight_requests") == 0, "in-flight back to 0", 20)
    assert gateway.metric("lichen_gateway_denied_total", reason="malformed_request") >= 5
    assert gateway.metric("lichen_gateway_denied_total", reason="header_timeout") >= 1
