"""TLS at the gateway with real clients: `lichen certs dev`, httpx trusting its CA, `openssl s_client` for the
protocol and cipher policy, a certificate rotated under a running gateway, the HTTP->HTTPS redirect and HSTS,
and the request-body idle timeout over plaintext and TLS."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import bad_certificates
import httpx
import pytest
from cryptography import x509
from gateway_harness import LICHEN, Backend, GatewayProcess, free_port, wait_until

from lichen.gateway import certificates

pytestmark = pytest.mark.slow
OPENSSL = shutil.which("openssl")


def certs_dev(out: Path, ca_dir: Path, hosts: str = "localhost,127.0.0.1") -> dict:
    result = subprocess.run([*LICHEN, "certs", "dev", str(out.parent), "--out", str(out), "--ca-dir", str(ca_dir),
                             "--hosts", hosts, "--json"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def trusting(ca_file: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file)


def served_serial(port: int) -> str:
    """The serial number of the certificate a new TLS connection is served (hex, as openssl prints it)."""
    pem = ssl.get_server_certificate(("127.0.0.1", port), timeout=5)
    return certificates.serial_hex(x509.load_pem_x509_certificate(pem.encode()).serial_number)


def duplicate_san_pair(ca_dir: Path) -> tuple[bytes, bytes]:
    """A certificate with two subjectAltName extensions (and its key), signed by the dev CA in ``ca_dir``."""
    ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
    return bad_certificates.duplicate_san_pair(ca_cert, certificates.read_key((ca_dir / "ca.key").read_bytes(), "ca.key"))


def s_client(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    assert OPENSSL, "openssl is needed (the CI installs it)"
    return subprocess.run([OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost", *args],
                          input="", capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("tls")
    ca_dir, cert_dir = tmp / "ca", tmp / "app" / "certs"
    made = certs_dev(cert_dir, ca_dir)
    backend = Backend("t1", tmp).wait()
    redirect_port = free_port()
    gateway = GatewayProcess({
        "routes": [{"prefix": "/api", "service": "b", "strip_prefix": True}],
        "services": {"b": {"endpoints": [backend.endpoint()]}},
        "internal_port": 0,
        "settings": {"tls": {"cert_file": "app/certs/dev.crt", "key_file": "app/certs/dev.key",
                             "redirect_http_port": redirect_port, "hsts": {"max_age_s": 600}},
                     "limits": {"body_idle_timeout_s": 1.5}},
    }, tmp)
    try:
        yield {"tmp": tmp, "ca": made["ca_cert"], "made": made, "cert_dir": cert_dir, "ca_dir": ca_dir,
               "gateway": gateway, "redirect_port": redirect_port, "backend": backend}
    finally:
        gateway.stop()
        backend.kill()


def test_certs_dev_keeps_its_ca_and_signs_a_certificate_openssl_verifies(site, tmp_path: Path) -> None:
    made, ca_dir = site["made"], site["ca_dir"]
    assert made["ca_created"] is True and made["hosts"] == ["localhost", "127.0.0.1"]
    assert made["spec"] == {"gateway": {"tls": {"cert_file": "certs/dev.crt", "key_file": "certs/dev.key"}}}
    assert os.stat(made["key_file"]).st_mode & 0o777 == 0o600
    assert os.stat(ca_dir / "ca.key").st_mode & 0o777 == 0o600
    ca_before = (ca_dir / "ca.crt").read_bytes()
    again = certs_dev(tmp_path / "certs", ca_dir, "myhost.local,::1")
    assert again["ca_created"] is False and (ca_dir / "ca.crt").read_bytes() == ca_before  # kept, reused
    assert again["serial"] != made["serial"] and again["hosts"] == ["myhost.local", "::1"]
    verified = subprocess.run([OPENSSL, "verify", "-CAfile", made["ca_cert"], again["cert_file"]],
                              capture_output=True, text=True, timeout=30)
    assert verified.returncode == 0 and ": OK" in verified.stdout, verified.stdout + verified.stderr
    text = subprocess.run([OPENSSL, "x509", "-in", again["cert_file"], "-noout", "-ext", "subjectAltName"],
                          capture_output=True, text=True, timeout=30).stdout
    assert "DNS:myhost.local" in text and "IP Address:0:0:0:0:0:0:0:1" in text
    bad = subprocess.run([*LICHEN, "certs", "dev", str(tmp_path), "--hosts", "not a host!", "--ca-dir", str(ca_dir)],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--hosts" in bad.stderr and "Traceback" not in bad.stderr


def test_httpx_over_tls_trusting_the_dev_ca_gets_hsts(site) -> None:
    gateway = site["gateway"]
    with httpx.Client(verify=trusting(site["ca"]), timeout=5) as client:
        response = client.get(f"{gateway.url}/api/whoami")
        assert response.status_code == 200 and response.json()["replica"] == "t1"
        assert response.headers["strict-transport-security"] == "max-age=600"
        missing = client.get(f"{gateway.url}/nowhere")  # the gateway's own answers carry it too
        assert missing.status_code == 404 and missing.headers["strict-transport-security"] == "max-age=600"
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{gateway.url}/api/whoami", timeout=5)  # the system store does not know the dev CA
    internal = httpx.get(f"{gateway.internal_url}/api/whoami", timeout=5)  # the loopback listener: plain HTTP
    assert internal.status_code == 200 and "strict-transport-security" not in internal.headers


def test_plain_http_is_redirected_to_https_with_308(site) -> None:
    gateway, port = site["gateway"], site["redirect_port"]
    response = httpx.get(f"http://localhost:{port}/api/whoami?x=1&y=2", timeout=5)
    assert response.status_code == 308
    assert response.headers["location"] == f"https://localhost:{gateway.port}/api/whoami?x=1&y=2"
    followed = httpx.get(f"http://localhost:{port}/api/whoami", timeout=5, follow_redirects=True,
                         verify=trusting(site["ca"]))
    assert followed.status_code == 200 and str(followed.url).startswith("https://")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:  # a Host that is no host name
        sock.sendall(b"GET / HTTP/1.1\r\nHost: evil.example/x\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 400")


@pytest.mark.parametrize(("option", "accepted"), [("-tls1", False), ("-tls1_1", False), ("-tls1_2", True),
                                                  ("-tls1_3", True)])
def test_openssl_s_client_protocol_versions(site, option: str, accepted: bool) -> None:
    # SECLEVEL=0 lets this client offer TLS 1.0/1.1 at all: the refusal must come from the gateway
    result = s_client(site["gateway"].port, option, "-cipher", "DEFAULT:@SECLEVEL=0", "-CAfile", site["ca"])
    negotiated = re.search(r"New, (\S+), Cipher is (\S+)", result.stdout)
    assert negotiated, result.stdout + result.stderr
    if accepted:
        assert negotiated.group(1) == ("TLSv1.3" if option == "-tls1_3" else "TLSv1.2"), result.stdout
        assert "Verify return code: 0 (ok)" in result.stdout
    else:
        assert negotiated.group(2) == "(NONE)" and result.returncode != 0, result.stdout


def test_openssl_s_client_ciphers(site) -> None:
    port = site["gateway"].port
    weak = s_client(port, "-tls1_2", "-cipher", "AES128-SHA")  # RSA key exchange, CBC: not in the policy
    assert weak.returncode != 0 and "Cipher is (NONE)" in weak.stdout, weak.stdout
    chosen = s_client(port, "-tls1_2", "-CAfile", site["ca"])
    assert re.search(r"Cipher is ECDHE-ECDSA-(AES128-GCM-SHA256|AES256-GCM-SHA384|CHACHA20-POLY1305)", chosen.stdout)
    no_name = subprocess.run([OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-noservername", "-tls1_2"],
                             input="", capture_output=True, text=True, timeout=30)  # no SNI (an IP address)
    assert "Cipher is ECDHE-" in no_name.stdout and "Compression: NONE" in no_name.stdout


def test_a_rotated_certificate_is_served_without_a_restart_and_a_bad_one_is_not(site) -> None:
    gateway, cert_dir = site["gateway"], site["cert_dir"]
    before = served_serial(gateway.port)
    assert before == site["made"]["serial"]
    with httpx.Client(verify=trusting(site["ca"]), timeout=5) as client:
        assert client.get(f"{gateway.url}/api/whoami").status_code == 200  # a keep-alive connection
        rotated = certs_dev(cert_dir, site["ca_dir"])
        wait_until(lambda: served_serial(gateway.port) == rotated["serial"], "the rotated certificate served", 20)
        assert client.get(f"{gateway.url}/api/whoami").status_code == 200  # the open connection kept working
    pid = gateway.process.pid
    assert gateway.process.poll() is None and gateway.listening["pid"] == pid  # the same process throughout
    assert any(e["serial"] == rotated["serial"] for e in gateway.log_events("tls_reloaded"))

    # a key that does not match: refused, logged naming the key file, the rotated pair keeps serving
    (cert_dir / "dev.key").write_bytes(certificates.key_pem(certificates.new_key()))
    failed = wait_until(lambda: gateway.log_events("tls_reload_failed"), "the mismatched key refused", 20)
    assert failed[-1]["file"] == str(cert_dir / "dev.key") and "does not match" in failed[-1]["error"]
    assert served_serial(gateway.port) == rotated["serial"]
    # an expired certificate: refused naming the certificate file
    ca_cert = x509.load_pem_x509_certificate((site["ca_dir"] / "ca.crt").read_bytes())
    ca_key = certificates.read_key((site["ca_dir"] / "ca.key").read_bytes(), "ca.key")
    key = certificates.new_key()
    old = certificates.make_server_cert(ca_cert, ca_key, key, ["localhost"],
                                        certificates.utc_now() - timedelta(days=30), days=10)
    (cert_dir / "dev.key").write_bytes(certificates.key_pem(key))
    (cert_dir / "dev.crt").write_bytes(certificates.cert_pem(old))
    wait_until(lambda: any("expired" in e["error"] and e["file"] == str(cert_dir / "dev.crt")
                           for e in gateway.log_events("tls_reload_failed")), "the expired certificate refused", 20)
    assert served_serial(gateway.port) == rotated["serial"]
    restored = certs_dev(cert_dir, site["ca_dir"])
    wait_until(lambda: served_serial(gateway.port) == restored["serial"], "a good pair served again", 20)


def test_a_certificate_cryptography_cannot_read_is_refused_and_reloads_go_on(site, tmp_path: Path) -> None:
    shutil.copy(site["cert_dir"] / "dev.crt", tmp_path / "dev.crt")
    shutil.copy(site["cert_dir"] / "dev.key", tmp_path / "dev.key")
    tls = {"cert_file": "dev.crt", "key_file": "dev.key"}
    gateway = GatewayProcess({"settings": {"tls": tls}, "internal_port": 0, "generation": "g1"}, tmp_path)
    try:
        serving = served_serial(gateway.port)
        dup_cert, dup_key = duplicate_san_pair(site["ca_dir"])
        (tmp_path / "dev.key").write_bytes(dup_key)
        (tmp_path / "dev.crt").write_bytes(dup_cert)
        failed = wait_until(lambda: gateway.log_events("tls_reload_failed"), "the unreadable certificate refused", 20)
        assert failed[-1]["file"] == str(tmp_path / "dev.crt") and "Duplicate" in failed[-1]["error"], failed
        assert served_serial(gateway.port) == serving
        # the watch goes on: a new config is still picked up, and so is a good pair
        gateway.update(generation="g2")
        wait_until(lambda: httpx.get(f"{gateway.internal_url}/-/config", timeout=5).json()["generation"] == "g2",
                   "the next config served", 20)
        rotated = certs_dev(tmp_path / "certs", site["ca_dir"])
        shutil.copy(rotated["key_file"], tmp_path / "dev.key")
        shutil.copy(rotated["cert_file"], tmp_path / "dev.crt")
        wait_until(lambda: served_serial(gateway.port) == rotated["serial"], "a good pair served again", 20)
        assert gateway.process.poll() is None and "Traceback" not in gateway.log_text()
    finally:
        gateway.stop()


def _protocol(port: int, option: str, ca: str) -> str:
    """The protocol `openssl s_client` with ``option`` (-tls1_2, -tls1_3) gets, or "refused"."""
    result = s_client(port, option, "-CAfile", ca)
    negotiated = re.search(r"New, (\S+), Cipher is (\S+)", result.stdout)
    assert negotiated, result.stdout + result.stderr
    return "refused" if negotiated.group(2) == "(NONE)" else negotiated.group(1)


def test_a_new_min_version_applies_on_reload_without_a_restart(site, tmp_path: Path) -> None:
    shutil.copy(site["cert_dir"] / "dev.crt", tmp_path / "dev.crt")
    shutil.copy(site["cert_dir"] / "dev.key", tmp_path / "dev.key")
    gateway = GatewayProcess({"settings": {"tls": {"cert_file": "dev.crt", "key_file": "dev.key"}}}, tmp_path)
    try:
        assert _protocol(gateway.port, "-tls1_2", site["ca"]) == "TLSv1.2"
        for step, (min_version, tls12) in enumerate([("1.3", "refused"), ("1.2", "TLSv1.2")], start=1):
            gateway.update(settings={"tls": {"cert_file": "dev.crt", "key_file": "dev.key", "min_version": min_version}})
            wait_until(lambda step=step: len(gateway.log_events("reloaded")) >= step, f"reload to {min_version}", 20)
            assert _protocol(gateway.port, "-tls1_2", site["ca"]) == tls12, min_version
            assert _protocol(gateway.port, "-tls1_3", site["ca"]) == "TLSv1.3"
        assert gateway.process.poll() is None and gateway.listening["pid"] == gateway.process.pid
    finally:
        gateway.stop()


def test_a_bad_certificate_or_key_at_startup_is_one_clear_error(site, tmp_path: Path) -> None:
    cert_dir = site["cert_dir"]
    key = certificates.new_key()
    ca_cert = x509.load_pem_x509_certificate((site["ca_dir"] / "ca.crt").read_bytes())
    ca_key = certificates.read_key((site["ca_dir"] / "ca.key").read_bytes(), "ca.key")
    (tmp_path / "old.key").write_bytes(certificates.key_pem(key))
    (tmp_path / "old.crt").write_bytes(certificates.cert_pem(certificates.make_server_cert(
        ca_cert, ca_key, key, ["localhost"], certificates.utc_now() - timedelta(days=30), days=10)))
    (tmp_path / "other.key").write_bytes(certificates.key_pem(certificates.new_key()))
    dup_cert, dup_key = duplicate_san_pair(site["ca_dir"])
    (tmp_path / "dup.crt").write_bytes(dup_cert)
    (tmp_path / "dup.key").write_bytes(dup_key)
    cases = {
        ("dup.crt", "dup.key"): ("dup.crt", "Duplicate 2.5.29.17 extension"),
        ("old.crt", "old.key"): ("old.crt", "expired"),
        (str(cert_dir / "dev.crt"), "missing.key"): ("missing.key", "cannot read"),
        (str(cert_dir / "dev.crt"), "other.key"): ("other.key", "does not match"),
        ("other.key", "other.key"): ("other.key", "not a PEM certificate"),
    }
    for (cert_file, key_file), (named, said) in cases.items():
        config = tmp_path / "gateway.json"
        config.write_text(json.dumps({"port": 0, "settings": {"tls": {"cert_file": cert_file, "key_file": key_file}}}))
        result = subprocess.run([*LICHEN, "gateway", "--config", str(config)], capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 2, result.stderr
        assert named in result.stderr and said in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def _slow_body(sock: socket.socket | ssl.SSLSocket) -> bytes:
    sock.sendall(b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"a" * 10)
    received = b""
    while chunk := sock.recv(4096):  # the gateway answers, then closes: recv returns b"" (or raises on a reset)
        received += chunk
    return received


def test_a_client_that_stops_sending_its_body_gets_408_and_a_closed_connection(site) -> None:
    gateway = site["gateway"]
    before = gateway.metric("lichen_gateway_denied_total", reason="body_timeout")
    internal = gateway.listening["internal_port"]
    with socket.create_connection(("127.0.0.1", internal), timeout=15) as sock:
        answer = _slow_body(sock)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"request body not received in time" in answer and b"connection: close" in answer
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=15) as raw:  # the same over TLS
        with trusting(site["ca"]).wrap_socket(raw, server_hostname="localhost") as sock:
            answer = _slow_body(sock)
    assert answer.startswith(b"HTTP/1.1 408") and b"strict-transport-security: max-age=600" in answer, answer
    wait_until(lambda: gateway.metric("lichen_gateway_denied_total", reason="body_timeout") >= before + 2,
               "both refusals counted", 10)
    # a slow but steady body is not cut: a byte every 0.3 s for 2.1 s (longer than the idle timeout)
    with socket.create_connection(("127.0.0.1", internal), timeout=15) as sock:
        sock.sendall(b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\nConnection: close\r\n\r\n")
        for _ in range(7):
            time.sleep(0.3)  # pacing a slow client, not waiting for a condition
            sock.sendall(b"z")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200") and b"\r\nzzzzzzz\r\n" in answer, answer
