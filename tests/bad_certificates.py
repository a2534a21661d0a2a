"""Certificates `cryptography` refuses to read, for the tests of the gateway's TLS errors (it parses a
certificate's parts lazily, so these load as PEM and fail later, when their extensions are read)."""

from __future__ import annotations

from datetime import timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from lichen.gateway import certificates


def duplicate_san_pair(ca_cert: x509.Certificate, ca_key: certificates.PrivateKey) -> tuple[bytes, bytes]:
    """A certificate (PEM) with two subjectAltName extensions, and its key (PEM): built with a second
    alternative-name extension whose OID is then made subjectAltName's. Its signature no longer matches; nothing
    at the gateway checks it before reading the extensions."""
    key = certificates.new_key()
    now = certificates.utc_now()
    names = [x509.DNSName("localhost")]
    cert = (x509.CertificateBuilder().subject_name(ca_cert.subject).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.IssuerAlternativeName(names), critical=False)
            .sign(ca_key, hashes.SHA256()))
    der = cert.public_bytes(serialization.Encoding.DER)
    issuer_alt_name, subject_alt_name = bytes.fromhex("0603551d12"), bytes.fromhex("0603551d11")  # DER OIDs
    assert der.count(issuer_alt_name) == 1
    patched = x509.load_der_x509_certificate(der.replace(issuer_alt_name, subject_alt_name))
    return certificates.cert_pem(patched), certificates.key_pem(key)
