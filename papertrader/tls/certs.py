"""Certificates with ``cryptography``: a private CA, server certificates it issues, and
what a certificate says (its names and expiry).

This is what ``pt up`` and ``pt certs`` use to make the private PKI of a
deployment; a certificate from any other CA (an ACME-issued one, a company
CA) is used as it is and only read here (:func:`describe`).

Keys are ECDSA P-256: small, fast to handshake with, accepted by every TLS
1.2/1.3 implementation. The CA lives ten years; a server certificate 397
days (the longest browsers accept), and is renewed by ``pt up`` well before.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
SERVER_DAYS = 397
#: Certificates expiring sooner than this are warned about (start-up log, `pt workers info`).
EXPIRY_WARNING_DAYS = 14

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class CertificateError(Exception):
    """A certificate or key file cannot be read or does not fit; the message says which."""


@dataclass(frozen=True)
class CertificateInfo:
    """What an operator checks in a certificate."""

    subject: str
    issuer: str
    names: tuple[str, ...]
    not_before: datetime.datetime
    not_after: datetime.datetime
    is_ca: bool
    fingerprint_sha256: str

    def days_left(self, now: datetime.datetime | None = None) -> float:
        now = now or datetime.datetime.now(datetime.timezone.utc)
        return (self.not_after - now).total_seconds() / 86400

    def expires_soon(self, now: datetime.datetime | None = None) -> bool:
        return self.days_left(now) < EXPIRY_WARNING_DAYS

    def expiry_note(self, now: datetime.datetime | None = None) -> str | None:
        """A warning line when the certificate has expired or expires within 14 days."""
        days = self.days_left(now)
        if days < 0:
            return f"certificate {self.subject} expired on {self.not_after:%Y-%m-%d %H:%M} UTC"
        if days < EXPIRY_WARNING_DAYS:
            return (
                f"certificate {self.subject} expires on {self.not_after:%Y-%m-%d %H:%M} UTC "
                f"(in {days:.1f} days): renew it"
            )
        return None

    def to_json(self) -> dict[str, object]:
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "names": list(self.names),
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "is_ca": self.is_ca,
            "sha256": self.fingerprint_sha256,
        }


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_ca(
    common_name: str = "PaperTrader private CA",
    days: int = CA_DAYS,
    not_before: datetime.datetime | None = None,
) -> tuple[bytes, bytes]:
    """A new self-signed CA: (certificate PEM, private key PEM). It may sign server
    certificates only (path length 0)."""
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = not_before or _now() - datetime.timedelta(minutes=5)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert_pem(cert), key_pem(key)


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def issue(
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    names: Iterable[str],
    days: int = SERVER_DAYS,
    not_before: datetime.datetime | None = None,
) -> tuple[bytes, bytes]:
    """A server certificate for ``names`` (host names and IP addresses) signed by the CA:
    (certificate chain PEM: the certificate then the CA, private key PEM)."""
    wanted = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    if not wanted:
        raise CertificateError("a server certificate needs at least one name or address")
    try:
        ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
        ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    except ValueError as exc:
        raise CertificateError(f"the CA certificate or key is not readable PEM: {exc}") from None
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise CertificateError("the CA key is not an ECDSA key made by `pt certs ca`")
    key = _new_key()
    start = not_before or _now() - datetime.timedelta(minutes=5)
    end = min(start + datetime.timedelta(days=days), ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, wanted[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([_general_name(n) for n in wanted]), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert_pem(cert) + ca_cert_pem, key_pem(key)


def load_certificate(path: Path) -> x509.Certificate:
    """The first certificate of a PEM file (a chain starts with the server's own)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CertificateError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise CertificateError(f"{path} holds no PEM certificate") from None


def names_of(cert: x509.Certificate) -> tuple[str, ...]:
    """The DNS names and IP addresses the certificate is valid for."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    dns = san.get_values_for_type(x509.DNSName)
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return tuple([*dns, *ips])


def describe(cert: x509.Certificate) -> CertificateInfo:
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    return CertificateInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        names=names_of(cert),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        is_ca=is_ca,
        fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(),
    )


def issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """True if ``ca`` signed ``cert``."""
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def write_private(path: Path, data: bytes) -> None:
    """Write a secret (a private key) readable by its owner only, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(temporary, path)


def write_public(path: Path, data: bytes) -> None:
    """Write a certificate (public), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)
