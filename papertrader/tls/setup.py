"""From the settings to the TLS of one process: its server context, its client context.

* :func:`server_tls`: the context a server listens with: ``tls_cert`` /
  ``tls_key`` when set (a public CA's certificate works as it is), else a
  certificate issued by the state directory's private CA for this machine's
  names. With ``tls = false`` it returns None after refusing any listening
  address that is not loopback, and warns (at every start).
* :func:`peer_context`: the context a process verifies its servers with
  (the worker's link to the master): ``tls_ca`` alone when set, else the
  state directory's CA and the system's trust store.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from papertrader.config import Settings
from papertrader.tls import certs
from papertrader.tls.contexts import TlsConfigError, client_context, server_context
from papertrader.tls.local import LocalPki, ca_file, default_names


@dataclass(frozen=True)
class ServerTls:
    """A server's TLS: the context and what its certificate says."""

    context: ssl.SSLContext
    cert: Path
    info: certs.CertificateInfo

    def status(self) -> dict[str, object]:
        """For `pt workers info` / status: names and expiry, and a warning when close."""
        return {
            "tls_names": ", ".join(self.info.names),
            "tls_expires": self.info.not_after,
            "tls_warning": self.info.expiry_note() or "",
        }


def is_loopback(host: str) -> bool:
    """True for loopback addresses and ``localhost``; a wildcard is not loopback."""
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def refuse_plaintext_off_loopback(settings: Settings, hosts: Iterable[str]) -> None:
    """TlsConfigError if ``tls = false`` and any of ``hosts`` is not a loopback address."""
    if settings.tls:
        return
    public = [h for h in hosts if not is_loopback(h)]
    if public:
        raise TlsConfigError(
            f"tls = false is refused on {public[0]}, which is not a loopback address: "
            "everything (passwords, sessions, orders) would cross the network in clear; "
            "keep TLS on (give tls_cert/tls_key, or let the private CA issue one) or "
            "listen on 127.0.0.1 only"
        )


def server_tls(
    settings: Settings,
    state_dir: Path,
    process: str,
    listen_hosts: Iterable[str],
    names: Iterable[str | None] = (),
) -> ServerTls | None:
    """This process's server TLS (None with ``tls = false``, after the checks)."""
    listen = list(listen_hosts)
    if not settings.tls:
        refuse_plaintext_off_loopback(settings, listen)
        logger.warning(
            "TLS is OFF (tls = false): clients and links on {} speak in clear; "
            "for local development only",
            ", ".join(listen),
        )
        return None
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise TlsConfigError(
            "set both tls_cert and tls_key, or neither (then the private CA issues one)"
        )
    if settings.tls_cert is not None and settings.tls_key is not None:
        cert, key = settings.tls_cert, settings.tls_key
    else:
        try:
            cert, key = LocalPki(state_dir).server_files(process, default_names([*listen, *names]))
        except (OSError, certs.CertificateError) as exc:
            raise TlsConfigError(f"cannot issue a certificate in {state_dir}/tls: {exc}") from None
    context = server_context(cert, key)
    try:
        info = certs.describe(certs.load_certificate(cert))
    except certs.CertificateError as exc:
        raise TlsConfigError(str(exc)) from None
    note = info.expiry_note()
    if note:
        logger.warning("{} ({})", note, cert)
    logger.info(
        "TLS certificate {} for {}, valid until {:%Y-%m-%d}",
        cert, ", ".join(info.names) or info.subject, info.not_after,
    )  # fmt: skip
    return ServerTls(context, cert, info)


def peer_context(settings: Settings, state_dir: Path) -> ssl.SSLContext | None:
    """How this process verifies the servers it connects to (None with ``tls = false``)."""
    if not settings.tls:
        return None
    return client_context(settings.tls_ca, extra_cas=[ca_file(state_dir)])
