"""The ``ssl.SSLContext`` of every TLS endpoint, built in one place so they all agree.

Servers (the worker's client port, the master's port, the web port) and
clients (``pt client``, the client library, the worker's link to the master)
speak TLS 1.2 at least and prefer 1.3; on 1.2 only ECDHE key exchange with
AEAD ciphers is offered (forward secrecy, no CBC, no RSA key transport).
Clients always verify: the chain up to a trusted CA, and the name they
connected to (a DNS name or an IP address) among the certificate's names.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from pathlib import Path

#: TLS 1.2 cipher suites (1.3 has its own, all modern): forward secret and AEAD only.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


#: Handshake failures that mean the server answered with something other than TLS.
_NOT_TLS = ("WRONG_VERSION_NUMBER", "UNEXPECTED_EOF_WHILE_READING", "RECORD_LAYER_FAILURE")


class TlsConfigError(Exception):
    """A certificate, key or CA file cannot be used; the message names the file."""


def _harden(context: ssl.SSLContext) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    return context


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context presenting ``cert`` (PEM, the chain after the certificate) and ``key``."""
    context = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    # No TLS 1.3 session tickets: our clients make full handshakes anyway, and unread
    # tickets would turn a client's close into a reset.
    context.num_tickets = 0
    try:
        context.load_cert_chain(str(cert), str(key))
    except FileNotFoundError as exc:
        raise TlsConfigError(f"TLS certificate or key missing: {exc.filename}") from None
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
        raise TlsConfigError(
            f"cannot use the TLS certificate {cert} with the key {key}: {reason}"
        ) from None
    return context


def client_context(
    ca: Path | str | None = None, extra_cas: Iterable[Path] = (), system: bool = True
) -> ssl.SSLContext:
    """A client context that verifies the server's chain and name.

    ``ca`` given: only the CA certificates in that PEM file are trusted (a
    private deployment pinned). Otherwise the system's trust store (when
    ``system``) and every existing file of ``extra_cas`` (a local stack's CA).
    """
    context = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    files = [Path(ca)] if ca is not None else [p for p in extra_cas if p.is_file()]
    if ca is None and system:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    for path in files:
        try:
            context.load_verify_locations(cafile=str(path))
        except FileNotFoundError:
            raise TlsConfigError(f"CA file {path} does not exist") from None
        except (ssl.SSLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
            raise TlsConfigError(f"cannot read CA certificates from {path}: {reason}") from None
    return context


def describe_handshake_error(exc: BaseException, host: str) -> str:
    """What a client tells its user when the TLS handshake with ``host`` failed."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        message = (exc.verify_message or "").rstrip(".")
        if exc.verify_code == 62:  # X509_V_ERR_HOSTNAME_MISMATCH / IP_ADDRESS_MISMATCH
            return (
                f"certificate not trusted: it is not valid for the name {host!r} this client "
                f"connected to (expected {host!r} among the certificate's names; {message})"
            )
        if exc.verify_code == 64:  # X509_V_ERR_IP_ADDRESS_MISMATCH
            return (
                f"certificate not trusted: it is not valid for the address {host!r} "
                f"(expected {host!r} among the certificate's names)"
            )
        hint = ""
        if exc.verify_code in (18, 19, 20, 21):  # self-signed / unknown issuer
            hint = (
                "; give the deployment's CA with --ca FILE (PT_CA), or `pt up`'s CA is "
                "found in its state directory"
            )
        return f"certificate not trusted: {message or exc}{hint}"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or str(exc)
        if reason in _NOT_TLS:
            return (
                "the server does not speak TLS (is it run with tls = false? then connect "
                "with --no-tls / tls = false, on loopback only)"
            )
        return f"TLS handshake failed: {reason}"
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return "the server closed the connection during the TLS handshake (does it speak TLS?)"
    return f"TLS handshake failed: {exc}"
