"""TLS at the gateway: the server context (TLS 1.2+, Mozilla "intermediate"), loaded from the spec's
certificate and key files and swapped live when they change.

:class:`CertificateReloader` owns the context the listener was created with.
Each new connection is handed the newest loaded pair through the context's
SNI callback (called for every ClientHello, with or without a server name), so
a rotated certificate is served without a restart and without touching open
connections. A change is loaded once both files have stayed the same for one
check (a writer that replaces the certificate and then the key is never
caught half-way), and only after the new pair passed every check
(:func:`load_pair`); a pair that fails keeps the old one serving and logs one
``tls_reload_failed`` line naming the file. The SNI callback swaps the
certificate only: the protocol versions come from the listener's context, so a
reloaded ``min_version`` is set there (:meth:`CertificateReloader.configure`).
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from lichen.errors import ConfigError
from lichen.gateway.certificates import EXPIRY_WARNING_DAYS, CertInfo, check_pair, utc_now
from lichen.logs import get_logger
from lichen.spec.gateways import TlsSpec

log = get_logger("lichen.gateway")

INTERMEDIATE_CIPHERS = ":".join([
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
])
"""Mozilla's "intermediate" TLS 1.2 suites (forward secrecy, AEAD only), without the DHE ones (the gateway
loads no DH parameters). TLS 1.3 uses OpenSSL's defaults, which are that profile's three suites."""
MIN_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}

FileSignature = tuple[int, int, int] | None
"""(mtime in ns, size, inode) of a file, None when it cannot be read"""


def signature(path: Path) -> FileSignature:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


def reload_step(loaded: object, pending: object, current: object) -> tuple[bool, object]:
    """One check of the files: (load them now?, what is pending after this check).

    A change waits one check: it is loaded when the next check sees the same
    signatures again, so files caught mid-replacement are not loaded.
    """
    if current == loaded:
        return False, None
    if current != pending:
        return False, current
    return True, None


def hsts_header(spec: TlsSpec | None) -> bytes:
    """The ``Strict-Transport-Security`` header line (with its CRLF) the spec asks for, or nothing."""
    if spec is None or spec.hsts is None:
        return b""
    value = b"max-age=%d" % int(spec.hsts.max_age_s)
    if spec.hsts.include_subdomains:
        value += b"; includeSubDomains"
    return b"strict-transport-security: %s\r\n" % value


def server_context(cert_path: Path, key_path: Path, min_version: str) -> ssl.SSLContext:
    """A server context with the pair loaded: TLS ``min_version``+, intermediate ciphers, server preference,
    no compression, no renegotiation, ALPN http/1.1."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MIN_VERSIONS[min_version]
    context.set_ciphers(INTERMEDIATE_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(cert_path, key_path, password=_no_password)
    except ssl.SSLError as exc:
        raise ConfigError(f"OpenSSL refused the certificate and key: {exc.reason or exc}", where=str(cert_path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", where=str(exc.filename or cert_path)) from None
    return context


def _no_password() -> bytes:
    raise ConfigError("the private key is encrypted; the gateway needs an unencrypted key")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", where=str(path)) from None


@dataclass(frozen=True)
class LoadedPair:
    context: ssl.SSLContext
    info: CertInfo


def load_pair(cert_path: Path, key_path: Path, min_version: str) -> LoadedPair:
    """Read, check (parse, key matches, not expired) and load a certificate chain and key; a ConfigError
    names the file at fault. The files are read again after loading: a pair that changed meanwhile is refused,
    so the context holds exactly the bytes that were checked."""
    cert_pem, key_pem = _read(cert_path), _read(key_path)
    cert_info = check_pair(cert_pem, key_pem, str(cert_path), str(key_path), utc_now())
    context = server_context(cert_path, key_path, min_version)
    if _read(cert_path) != cert_pem or _read(key_path) != key_pem:
        raise ConfigError("changed while it was being loaded; trying again at the next check", where=str(cert_path))
    return LoadedPair(context, cert_info)


def resolve(path: str, base_dir: Path) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else base_dir / candidate


class CertificateReloader:
    """The listener's TLS context, and the newest certificate it hands each new connection (module docs)."""

    def __init__(self, spec: TlsSpec, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.spec = spec
        self.cert_path, self.key_path = resolve(spec.cert_file, base_dir), resolve(spec.key_file, base_dir)
        self._loaded_signature: object = self._signatures()
        self._pending: object = None
        self.current = load_pair(self.cert_path, self.key_path, spec.min_version)  # at startup: errors stop it
        self.context = self.current.context
        """what the listener is created with; its SNI callback hands over the newest pair"""
        self.context.sni_callback = self._select
        self.reloads = 0
        self._log_loaded("tls_loaded")

    def _signatures(self) -> object:
        return signature(self.cert_path), signature(self.key_path)

    def _select(self, ssl_object: ssl.SSLObject | ssl.SSLSocket, server_name: str | None,
                context: ssl.SSLContext) -> None:
        current = self.current.context
        if context is not current:
            ssl_object.context = current

    @property
    def response_headers(self) -> bytes:
        """Header lines every response on the TLS listener carries (HSTS when the spec asks for it)."""
        return hsts_header(self.spec)

    def configure(self, spec: TlsSpec) -> None:
        """A reloaded config: new files or minimum version are loaded now (the old pair stays on failure).

        The protocol bounds of a handshake come from the listener's context, not from the one the SNI callback
        hands over (that swaps the certificate only), so a new ``min_version`` is set on the listener's context
        too: every connection from now on is held to it, whether or not the pair reloads."""
        changed = (spec.cert_file, spec.key_file, spec.min_version) != (
            self.spec.cert_file, self.spec.key_file, self.spec.min_version)
        if spec.min_version != self.spec.min_version:
            self.context.minimum_version = MIN_VERSIONS[spec.min_version]
            log.info("tls_min_version", min_version=spec.min_version)
        self.spec = spec
        if changed:
            self.cert_path, self.key_path = resolve(spec.cert_file, self.base_dir), resolve(spec.key_file, self.base_dir)
            self._loaded_signature = None
            self.check(forced=True)

    def check(self, forced: bool = False) -> bool:
        """Load the files when they changed and stayed the same since the last check (or at once when
        ``forced``: SIGHUP, a new config); True when a new pair is being served."""
        current = self._signatures()
        load, self._pending = reload_step(self._loaded_signature, self._pending, current)
        if not (load or (forced and current != self._loaded_signature)):
            return False
        self._loaded_signature, self._pending = current, None
        try:
            pair = load_pair(self.cert_path, self.key_path, self.spec.min_version)
        except ConfigError as exc:
            if "changed while it was being loaded" in exc.message:
                self._loaded_signature = None  # look again at the next check
                return False
            log.error("tls_reload_failed", file=exc.where, error=exc.message,
                      serving_serial=self.current.info.serial, serving_not_after=self.current.info.not_after.isoformat())
            return False
        except Exception as exc:  # whatever else a file can make a library raise: the old pair keeps serving
            log.error("tls_reload_failed", file=str(self.cert_path), error=f"{type(exc).__name__}: {exc}"[:300],
                      serving_serial=self.current.info.serial, serving_not_after=self.current.info.not_after.isoformat())
            return False
        self.current = pair
        self.reloads += 1
        self._log_loaded("tls_reloaded")
        return True

    def _log_loaded(self, event: str) -> None:
        cert = self.current.info
        log.info(event, cert_file=str(self.cert_path), serial=cert.serial, subject=cert.subject,
                 hosts=list(cert.hosts), not_after=cert.not_after.isoformat())
        days = cert.days_left(utc_now())
        if days < EXPIRY_WARNING_DAYS:
            log.warning("tls_cert_expiring", cert_file=str(self.cert_path), days_left=round(days, 1),
                        not_after=cert.not_after.isoformat())
