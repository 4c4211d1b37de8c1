"""The test suite's TLS: one private CA per test process, as `pt certs` makes them.

Servers under test get ``tls_env()`` (a certificate for localhost, 127.0.0.1
and ::1, and the CA to verify their peers with), and the tests' own clients
verify them with ``client_context()``: TLS is on in the tests as it is for
users, with real certificates and real verification.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import socket
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from papertrader.tls.contexts import client_context as _client_context
from papertrader.tls.contexts import server_context as _server_context
from papertrader.tls.local import LocalPki

NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class TestPki:
    directory: Path
    ca: Path
    cert: Path
    key: Path


@functools.cache
def pki() -> TestPki:
    directory = Path(tempfile.mkdtemp(prefix="pt-tls-"))
    atexit.register(shutil.rmtree, directory, True)
    local = LocalPki.at(directory)
    local.ensure_ca()
    cert, key = directory / "server.pem", directory / "server.key"
    local.issue_to(NAMES, cert, key)
    return TestPki(directory, local.ca_cert, cert, key)


def tls_env() -> dict[str, str]:
    """The settings of a server under test: its certificate, and the CA of its peers."""
    made = pki()
    return {
        "PT_TLS_CERT": str(made.cert),
        "PT_TLS_KEY": str(made.key),
        "PT_TLS_CA": str(made.ca),
    }


@functools.cache
def client_context() -> ssl.SSLContext:
    """Verifies the servers under test (chain and name), as `pt client --ca` would."""
    return _client_context(pki().ca)


@functools.cache
def server_context() -> ssl.SSLContext:
    """For a test's own server (a scripted master): the test certificate."""
    made = pki()
    return _server_context(made.cert, made.key)


def connect(
    port: int,
    host: str = "127.0.0.1",
    timeout: float | None = 10.0,
    source_address: tuple[str, int] | None = None,
) -> ssl.SSLSocket:
    """A TLS connection to a server under test, verified."""
    sock = socket.create_connection((host, port), timeout=timeout, source_address=source_address)
    try:
        return client_context().wrap_socket(sock, server_hostname=host)
    except BaseException:
        sock.close()
        raise
