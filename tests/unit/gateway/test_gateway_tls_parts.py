"""The pure parts of TLS, redirects and WebSockets at the gateway, and the certificate reloader on real files."""

from __future__ import annotations

import json
import logging
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from bad_certificates import duplicate_san_pair

from lichen.errors import ConfigError
from lichen.gateway import certificates
from lichen.gateway.redirecting import redirect_location
from lichen.gateway.requests import Request
from lichen.gateway.responses import Responder
from lichen.gateway.flow_control import FlowControl
from lichen.gateway.tls import (INTERMEDIATE_CIPHERS, CertificateReloader, hsts_header, load_pair, reload_step,
                                server_context)
from lichen.gateway.tunnels import over_limit
from lichen.spec.gateways import GatewaySpec, TlsSpec
from lichen.spec.loading import check_spec

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def pair(tmp: Path, hosts: list[str] | None = None, now: datetime | None = None, days: int = 30,
         name: str = "dev") -> tuple[Path, Path, str]:
    """A CA-signed certificate and key written to ``tmp``; returns their paths and the serial."""
    ca_key = certificates.new_key()
    ca = certificates.make_ca(ca_key, "test CA", now or certificates.utc_now())
    key = certificates.new_key()
    cert = certificates.make_server_cert(ca, ca_key, key, hosts or ["localhost"], now or certificates.utc_now(), days)
    (tmp / f"{name}.crt").write_bytes(certificates.cert_pem(cert))
    (tmp / f"{name}.key").write_bytes(certificates.key_pem(key))
    return tmp / f"{name}.crt", tmp / f"{name}.key", certificates.serial_hex(cert.serial_number)


@pytest.mark.parametrize(("host", "target", "port", "expected"), [
    (b"example.com", b"/a?b=1", 443, b"https://example.com/a?b=1"),
    (b"Example.COM:80", b"/", 8443, b"https://example.com:8443/"),
    (b"[::1]:8080", b"/x", 8443, b"https://[::1]:8443/x"),
    (b"127.0.0.1:8080", b"/x", 443, b"https://127.0.0.1/x"),
    (None, b"/x", 8443, b"https://127.0.0.1:8443/x"),
    (b"a.example", b"http://other.example/p?q", 443, b"https://a.example/p?q"),  # absolute-form: its path only
    (b"a.example", b"*", 443, b"https://a.example/"),
    (b"evil.example/x", b"/", 443, None),
    (b"a b", b"/", 443, None),
    (b"[nope]", b"/", 443, None),
])
def test_redirect_location(host: bytes | None, target: bytes, port: int, expected: bytes | None) -> None:
    assert redirect_location(host, target, port, "127.0.0.1") == expected


def test_reload_waits_one_check_for_files_to_settle() -> None:
    loaded = ("a", "b")
    assert reload_step(loaded, None, loaded) == (False, None)  # nothing changed
    assert reload_step(loaded, None, ("a2", "b")) == (False, ("a2", "b"))  # changed: wait a check
    assert reload_step(loaded, ("a2", "b"), ("a2", "b2")) == (False, ("a2", "b2"))  # still changing
    assert reload_step(loaded, ("a2", "b2"), ("a2", "b2")) == (True, None)  # settled: load it


def test_hsts_header_and_websocket_limit() -> None:
    assert hsts_header(None) == b""
    assert hsts_header(TlsSpec(cert_file="c", key_file="k")) == b""
    spec = TlsSpec.model_validate({"cert_file": "c", "key_file": "k", "hsts": {"include_subdomains": True}})
    assert hsts_header(spec) == b"strict-transport-security: max-age=31536000; includeSubDomains\r\n"
    assert not over_limit(1, 2) and over_limit(2, 2) and over_limit(0, 0)


def test_responder_puts_extra_headers_after_the_status_line() -> None:
    class Transport:
        written = b""

        def write(self, data: bytes) -> None:
            self.written += data

    transport = Transport()
    Responder(FlowControl(transport), "1.2.3.4", b"strict-transport-security: max-age=5\r\n").send_simple(
        404, "no", "rid")
    head = transport.written.split(b"\r\n\r\n")[0].split(b"\r\n")
    assert head[0] == b"HTTP/1.1 404 Not Found" and head[1] == b"strict-transport-security: max-age=5"


def test_spec_fields_and_their_errors() -> None:
    spec = GatewaySpec.model_validate({"port": 8443, "tls": {"cert_file": "c", "key_file": "k", "min_version": 1.3,
                                                             "redirect_http_port": 8080}})
    assert spec.tls is not None and spec.tls.min_version == "1.3" and spec.websockets.max_connections == 1000
    assert spec.limits.body_idle_timeout_s == 10.0
    with pytest.raises(ValueError, match="redirect_http_port"):
        GatewaySpec.model_validate({"port": 8443, "tls": {"cert_file": "c", "key_file": "k", "redirect_http_port": 8443}})
    with pytest.raises(ValueError, match="min_version"):
        TlsSpec.model_validate({"cert_file": "c", "key_file": "k", "min_version": 1.1})


def test_validate_checks_the_tls_files_exist(tmp_path: Path) -> None:
    (tmp_path / "lichen.yaml").write_text("app: t\ngateway:\n  tls:\n    cert_file: certs/dev.crt\n"
                                          "    key_file: certs/dev.key\n")
    _, issues = check_spec(tmp_path / "lichen.yaml")
    assert [(i.line, i.field) for i in issues] == [(4, "gateway.tls.cert_file"), (5, "gateway.tls.key_file")]
    assert "lichen certs dev" in issues[0].message
    (tmp_path / "certs").mkdir()
    pair(tmp_path / "certs")
    spec, issues = check_spec(tmp_path / "lichen.yaml")
    assert issues == [] and spec is not None and spec.gateway.tls is not None


def test_check_pair_names_the_file_at_fault(tmp_path: Path) -> None:
    cert, key, serial = pair(tmp_path, ["localhost", "127.0.0.1"])
    info = certificates.check_pair(cert.read_bytes(), key.read_bytes(), "c.pem", "k.pem", certificates.utc_now())
    assert info.serial == serial and info.hosts == ("localhost", "127.0.0.1")
    other = certificates.key_pem(certificates.new_key())
    with pytest.raises(ConfigError, match="does not match") as mismatch:
        certificates.check_pair(cert.read_bytes(), other, "c.pem", "k.pem", certificates.utc_now())
    assert mismatch.value.where == "k.pem"
    with pytest.raises(ConfigError, match="expired") as expired:
        certificates.check_pair(cert.read_bytes(), key.read_bytes(), "c.pem", "k.pem",
                                certificates.utc_now() + timedelta(days=60))
    assert expired.value.where == "c.pem"
    with pytest.raises(ConfigError, match="not a PEM certificate"):
        certificates.read_chain(b"nonsense", "c.pem")
    with pytest.raises(ConfigError, match="BEGIN CERTIFICATE"):
        certificates.read_chain(b"", "c.pem")


def test_parts_cryptography_cannot_read_name_the_file(tmp_path: Path) -> None:
    ca_key = certificates.new_key()
    dup_cert, dup_key = duplicate_san_pair(certificates.make_ca(ca_key, "test CA", certificates.utc_now()), ca_key)
    with pytest.raises(ConfigError, match="cannot read the certificate .Duplicate 2.5.29.17 extension") as dup:
        certificates.check_pair(dup_cert, dup_key, "c.pem", "k.pem", certificates.utc_now())
    assert dup.value.where == "c.pem"
    with pytest.raises(ConfigError, match="not a PEM private key") as garbage:
        certificates.read_key(b"-----BEGIN PRIVATE KEY-----\nbm9uc2Vuc2U=\n-----END PRIVATE KEY-----\n", "k.pem")
    assert garbage.value.where == "k.pem"


def test_validity_and_hosts() -> None:
    later = NOW + timedelta(days=1)
    assert certificates.validity_problem(NOW, later, NOW + timedelta(hours=1)) is None
    assert "expired on" in certificates.validity_problem(NOW, later, later)
    assert "not valid before" in certificates.validity_problem(later, later + timedelta(days=1), NOW)
    assert certificates.parse_hosts("localhost, 127.0.0.1,::1,*.dev.local,localhost") == [
        "localhost", "127.0.0.1", "::1", "*.dev.local"]
    for bad in ("", "a b", "-x.example", "exa_mple.com"):
        with pytest.raises(ConfigError):
            certificates.parse_hosts(bad)


def test_an_encrypted_key_is_refused_naming_it(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    encrypted = certificates.new_key().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.BestAvailableEncryption(b"pw"))
    with pytest.raises(ConfigError, match="encrypted") as caught:
        certificates.read_key(encrypted, "k.pem")
    assert caught.value.where == "k.pem"


def test_server_context_policy(tmp_path: Path) -> None:
    cert, key, _ = pair(tmp_path)
    context = server_context(cert, key, "1.2")
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_NO_COMPRESSION and context.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    tls12 = {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert tls12 == set(INTERMEDIATE_CIPHERS.split(":"))
    assert all("ECDHE" in name and ("GCM" in name or "CHACHA20" in name) for name in tls12)
    assert server_context(cert, key, "1.3").minimum_version == ssl.TLSVersion.TLSv1_3


def test_reloader_swaps_a_settled_good_pair_and_keeps_the_old_one_on_a_bad_pair(tmp_path: Path,
                                                                               caplog: pytest.LogCaptureFixture) -> None:
    cert, key, first = pair(tmp_path)
    reloader = CertificateReloader(TlsSpec(cert_file="dev.crt", key_file="dev.key"), tmp_path)
    assert reloader.current.info.serial == first and reloader.check() is False
    _, _, second = pair(tmp_path)
    assert reloader.check() is False  # changed: loaded at the next check if it stays the same
    assert reloader.check() is True and reloader.current.info.serial == second
    handed = []

    class Handshake:  # what the SNI callback gets: the connection's SSL object
        @property
        def context(self) -> ssl.SSLContext:
            raise AssertionError

        @context.setter
        def context(self, value: ssl.SSLContext) -> None:
            handed.append(value)

    reloader.context.sni_callback(Handshake(), None, reloader.context)  # type: ignore[misc]
    assert handed == [reloader.current.context]  # new connections get the new pair
    key.write_bytes(certificates.key_pem(certificates.new_key()))
    with caplog.at_level(logging.ERROR, logger="lichen.gateway"):
        reloader.check()
        assert reloader.check() is False
    assert reloader.current.info.serial == second
    failures = [json.loads(r.getMessage()) if r.getMessage().startswith("{") else r.__dict__ for r in caplog.records]
    assert any(str(key) in json.dumps(f, default=str) for f in failures), failures
    with pytest.raises(ConfigError, match="cannot read"):
        load_pair(tmp_path / "missing.crt", key, "1.2")


def test_reloader_keeps_its_pair_on_an_error_nobody_mapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    cert, _, first = pair(tmp_path)
    reloader = CertificateReloader(TlsSpec(cert_file="dev.crt", key_file="dev.key"), tmp_path)

    def broken(*args: object) -> None:
        raise RuntimeError("the library raised what nobody mapped")

    monkeypatch.setattr("lichen.gateway.tls.load_pair", broken)
    pair(tmp_path)
    with caplog.at_level(logging.ERROR, logger="lichen.gateway"):
        assert reloader.check(forced=True) is False  # no exception out of it: the watch goes on
    assert reloader.current.info.serial == first
    (record,) = [r.getMessage() for r in caplog.records if "tls_reload_failed" in r.getMessage()]
    assert "RuntimeError: the library raised" in record and str(cert) in record


def test_upgrade_slots_on_a_request() -> None:
    request = Request()
    assert request.upgrade is False and request.upgrade_header is None


def test_serials_read_as_openssl_prints_them_in_whole_bytes() -> None:
    """A random serial's top digit may be 0: openssl pads to whole bytes, and so must what Lichen prints, or a
    comparison with `openssl x509 -serial` fails one time in eight."""
    from lichen.gateway.certificates import serial_hex

    assert serial_hex(0x0ABC) == "0ABC" and serial_hex(0xABC) == "0ABC" and serial_hex(0x1ABC) == "1ABC"
    assert serial_hex(255) == "FF" and serial_hex(15) == "0F"
