"""Certificates as data: read and check a PEM certificate chain and key, and make a development CA and
server certificate, with ``cryptography``.

Nothing here touches a file or the clock: callers pass the bytes they read and
``now``, and write what they get back (:mod:`lichen.gateway.tls` for the
gateway, ``lichen certs dev`` for the CLI). Every problem is a
:class:`~lichen.errors.ConfigError` naming the file it came from.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lichen.errors import ConfigError

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey
EXPIRY_WARNING_DAYS = 14
"""a certificate that expires sooner than this is loaded with a warning"""
_HOSTNAME = re.compile(r"(?=.{1,253}$)(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def serial_hex(serial_number: int) -> str:
    """A serial number as ``openssl x509 -serial`` prints it: upper-case hexadecimal in whole bytes (a leading 0
    when the digits are odd)."""
    digits = f"{serial_number:X}"
    return "0" + digits if len(digits) % 2 else digits


@dataclass(frozen=True)
class CertInfo:
    """What the gateway logs and ``lichen certs dev`` prints about a certificate."""

    subject: str
    issuer: str
    serial: str
    """hexadecimal, as ``openssl x509 -serial`` prints it"""
    not_before: datetime
    not_after: datetime
    sha256: str
    hosts: tuple[str, ...]
    """its subject alternative names (DNS names and IP addresses)"""

    def days_left(self, now: datetime) -> float:
        return (self.not_after - now).total_seconds() / 86400.0


def info(cert: x509.Certificate) -> CertInfo:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        hosts = tuple([*sans.get_values_for_type(x509.DNSName),
                       *(str(ip) for ip in sans.get_values_for_type(x509.IPAddress))])
    except x509.ExtensionNotFound:
        hosts = ()
    return CertInfo(subject=cert.subject.rfc4514_string(), issuer=cert.issuer.rfc4514_string(),
                    serial=serial_hex(cert.serial_number), not_before=cert.not_valid_before_utc,
                    not_after=cert.not_valid_after_utc, sha256=cert.fingerprint(hashes.SHA256()).hex(), hosts=hosts)


def read_chain(data: bytes, where: str) -> list[x509.Certificate]:
    """The certificates of a PEM file, leaf first; an empty or unreadable one is an error naming ``where``."""
    try:
        chain = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigError("not a PEM certificate (no readable -----BEGIN CERTIFICATE----- block)", where=where) from None
    if not chain:
        raise ConfigError("no certificate in the file", where=where)
    return chain


def read_key(data: bytes, where: str) -> PrivateKey:
    """The private key of a PEM file (unencrypted: the gateway starts unattended)."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigError("the private key is encrypted; the gateway needs an unencrypted key "
                          "(openssl pkey -in KEY -out KEY.plain), readable only by its user", where=where) from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"not a PEM private key ({_short(exc)})", where=where) from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
                      | ed448.Ed448PrivateKey):
        raise ConfigError(f"unsupported key type {type(key).__name__}", where=where)
    return key


def validity_problem(not_before: datetime, not_after: datetime, now: datetime) -> str | None:
    """Why a certificate cannot be served at ``now`` (expired, not yet valid), or None."""
    if now >= not_after:
        return f"the certificate expired on {not_after:%Y-%m-%d %H:%M} UTC"
    if now < not_before:
        return f"the certificate is not valid before {not_before:%Y-%m-%d %H:%M} UTC"
    return None


def _public_der(key: object) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)  # type: ignore[attr-defined]


UNREADABLE = (ValueError, TypeError, UnsupportedAlgorithm, x509.DuplicateExtension, x509.UnsupportedGeneralNameType)
"""what ``cryptography`` raises reading a certificate's parts (it parses them lazily, when first asked): two
extensions of one kind, an unknown name type, a public key of an unsupported algorithm, bad DER inside"""


def check_pair(cert_pem: bytes, key_pem: bytes, cert_where: str, key_where: str, now: datetime) -> CertInfo:
    """The leaf certificate's details when the chain and key can be served together at ``now``; else a
    ConfigError naming the file at fault (the key's for a mismatch)."""
    chain = read_chain(cert_pem, cert_where)
    key = read_key(key_pem, key_where)
    leaf = chain[0]
    try:
        leaf_public, cert_info = _public_der(leaf.public_key()), info(leaf)
    except UNREADABLE as exc:
        raise ConfigError(f"cannot read the certificate ({_short(exc)})", where=cert_where) from None
    if leaf_public != _public_der(key.public_key()):
        raise ConfigError(f"the key does not match the certificate in {cert_where} (its public key differs)",
                          where=key_where)
    problem = validity_problem(leaf.not_valid_before_utc, leaf.not_valid_after_utc, now)
    if problem:
        raise ConfigError(problem, where=cert_where)
    return cert_info


# ------------------------------------------------------------------ making a development CA and certificate


def parse_hosts(text: str) -> list[str]:
    """``localhost,127.0.0.1,::1`` as a list; each a DNS name (``*.`` allowed) or an IP address."""
    hosts = [h.strip() for h in text.split(",") if h.strip()]
    if not hosts:
        raise ConfigError("give at least one host name or IP address", where="--hosts")
    for host in hosts:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if not _HOSTNAME.fullmatch(host):
                raise ConfigError(f"{host!r} is neither a host name nor an IP address", where="--hosts") from None
    return list(dict.fromkeys(hosts))


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Lichen development"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(key: PrivateKey, common_name: str, now: datetime, days: int = 3650) -> x509.Certificate:
    """A self-signed CA that may sign server certificates only (path length 0)."""
    name = _name(common_name)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256()))


def make_server_cert(ca_cert: x509.Certificate, ca_key: PrivateKey, key: PrivateKey, hosts: list[str],
                     now: datetime, days: int = 397) -> x509.Certificate:
    """A server certificate for ``hosts`` (subject alternative names) signed by the CA."""
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (x509.CertificateBuilder().subject_name(_name(hosts[0])).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=isinstance(key, rsa.RSAPrivateKey), data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
            .sign(ca_key, hashes.SHA256()))


def check_ca(cert_pem_bytes: bytes, key_pem_bytes: bytes, cert_where: str, key_where: str,
             now: datetime) -> tuple[x509.Certificate, PrivateKey]:
    """A kept development CA, checked before it signs anything: a CA certificate, its key, still valid."""
    check_pair(cert_pem_bytes, key_pem_bytes, cert_where, key_where, now)
    cert = read_chain(cert_pem_bytes, cert_where)[0]
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    except UNREADABLE as exc:  # check_pair read them already; kept for a CA read some other way
        raise ConfigError(f"cannot read the certificate ({_short(exc)})", where=cert_where) from None
    if constraints is None or not constraints.ca:
        raise ConfigError("not a CA certificate (no basicConstraints CA:TRUE)", where=cert_where)
    return cert, read_key(key_pem_bytes, key_where)


def utc_now() -> datetime:
    """The wall clock as certificates need it (an edge: callers of the checks above pass ``now``)."""
    return datetime.now(UTC)


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
