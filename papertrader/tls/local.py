"""The private PKI of a state directory: ``<state_dir>/tls/``.

``pt up`` (and a server started without ``tls_cert``) keeps a CA here and one
certificate per server process, so TLS is on without any setup:

* ``ca.pem``: the CA certificate. ``pt client`` with the same state directory
  trusts it without flags; give it to other clients with ``--ca`` / ``PT_CA``.
* ``ca.key``: its private key (0600). Whoever holds it can impersonate every
  server of the stack: it never leaves the directory.
* ``<process>.pem`` / ``<process>.key``: a server's certificate chain and key.
  Re-issued when the names wanted change, when the CA changed, or within 30
  days of expiry; otherwise reused, so restarts do not churn certificates.

Processes of one stack start concurrently: every change happens under an
exclusive lock on ``tls/.lock``.
"""

from __future__ import annotations

import datetime
import fcntl
import ipaddress
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from papertrader.tls import certs

DIRECTORY = "tls"
#: An automatically issued certificate is renewed when fewer days than this are left.
RENEW_DAYS = 30
#: Host strings that mean "every address": not a name a client connects to.
WILDCARDS = frozenset({"", "0.0.0.0", "::", "*"})


def tls_dir(state_dir: Path) -> Path:
    return state_dir / DIRECTORY


def ca_file(state_dir: Path) -> Path:
    """The CA certificate of the state directory's stack (may not exist yet)."""
    return tls_dir(state_dir) / "ca.pem"


def default_names(hosts: Iterable[str | None] = ()) -> list[str]:
    """The names a local server certificate carries: the loopback names, this machine's
    host name, and every configured host that is not a wildcard."""
    names = ["localhost", "127.0.0.1", "::1", socket.gethostname()]
    for host in hosts:
        if host is None:
            continue
        host = host.strip().strip("[]")
        if host not in WILDCARDS:
            names.append(host)
    return list(dict.fromkeys(_canonical(n) for n in names if n))


def _canonical(name: str) -> str:
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name.lower()


class LocalPki:
    """The CA and server certificates of one state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.directory = tls_dir(state_dir)
        self.ca_cert = self.directory / "ca.pem"
        self.ca_key = self.directory / "ca.key"

    @classmethod
    def at(cls, directory: Path) -> LocalPki:
        """The CA kept in ``directory`` itself (ca.pem, ca.key): `pt certs --ca-dir`."""
        pki = cls(directory)
        pki.directory = directory
        pki.ca_cert = directory / "ca.pem"
        pki.ca_key = directory / "ca.key"
        return pki

    def issue_to(
        self, names: Iterable[str], cert_path: Path, key_path: Path, days: int = certs.SERVER_DAYS
    ) -> None:
        """Issue a certificate for ``names`` into the two files (the key 0600)."""
        with self._locked():
            if not (self.ca_cert.is_file() and self.ca_key.is_file()):
                raise certs.CertificateError(
                    f"no CA in {self.directory} (ca.pem and ca.key): make one with `pt certs ca`"
                )
            chain, key = certs.issue(
                self.ca_cert.read_bytes(), self.ca_key.read_bytes(), names, days=days
            )
            certs.write_private(key_path, key)
            certs.write_public(cert_path, chain)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.directory / ".lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def ensure_ca(self) -> bool:
        """Make the CA if there is none; True if it was made now."""
        with self._locked():
            return self._ensure_ca()

    def _ensure_ca(self) -> bool:
        if self.ca_cert.is_file() and self.ca_key.is_file():
            return False
        cert, key = certs.make_ca(f"PaperTrader private CA ({socket.gethostname()})")
        certs.write_private(self.ca_key, key)
        certs.write_public(self.ca_cert, cert)
        return True

    def server_files(self, process: str, names: Iterable[str]) -> tuple[Path, Path]:
        """The certificate and key of ``process`` for ``names``, issued if needed."""
        wanted = list(dict.fromkeys(_canonical(n) for n in names))
        cert_path = self.directory / f"{process}.pem"
        key_path = self.directory / f"{process}.key"
        with self._locked():
            self._ensure_ca()
            if not self._usable(cert_path, key_path, wanted):
                chain, key = certs.issue(
                    self.ca_cert.read_bytes(), self.ca_key.read_bytes(), wanted
                )
                certs.write_private(key_path, key)
                certs.write_public(cert_path, chain)
        return cert_path, key_path

    def _usable(self, cert_path: Path, key_path: Path, wanted: list[str]) -> bool:
        if not (cert_path.is_file() and key_path.is_file()):
            return False
        try:
            cert = certs.load_certificate(cert_path)
            ca = certs.load_certificate(self.ca_cert)
        except certs.CertificateError:
            return False
        info = certs.describe(cert)
        soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=RENEW_DAYS)
        has = {_canonical(n) for n in info.names}
        return info.not_after > soon and set(wanted) <= has and certs.issued_by(cert, ca)
