"""TLS for PostgreSQL connections that leave the host: ``sslmode=verify-full``.

libpq's default (``prefer``) encrypts when the server offers it but verifies
nothing, and falls back to plaintext: on a path between hosts that protects
against nobody. A configured URL whose host is not this machine (not a Unix
socket, not loopback) therefore gets ``sslmode=verify-full`` (the chain and the
host name) and ``sslrootcert``: the process's ``tls_ca`` (the deployment's CA,
which issues the database's certificate under Ansible), else ``system`` (the
system trust store, for a database with a public CA's certificate). A URL that
names its own ``sslmode`` is left as it is: the operator chose.
Loopback and Unix-socket URLs are left as they are.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

LOCAL_NAMES = {"localhost", "localhost.localdomain", ""}


def leaves_host(url: str) -> bool:
    """Whether a ``postgresql://`` URL connects to another machine."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        return False  # a key=value DSN: left to the operator
    query = dict(parse_qsl(parts.query))
    # Several hosts may be named (a primary and its replica): any remote one counts.
    hosts = query.get("host") or parts.netloc.rpartition("@")[2]
    for entry in hosts.split(","):
        entry = entry.strip()
        host = entry[1:].partition("]")[0] if entry.startswith("[") else entry.partition(":")[0]
        if host.startswith("/") or host.lower() in LOCAL_NAMES:
            continue
        try:
            if ipaddress.ip_address(host).is_loopback:
                continue
        except ValueError:
            pass
        return True
    return False


def verified_url(url: str, ca: Path | None) -> str:
    """``url`` with ``sslmode=verify-full`` (and an ``sslrootcert`` unless it names one) if
    it leaves the host and names no ``sslmode``; otherwise ``url`` unchanged."""
    if not leaves_host(url):
        return url
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    named = {key for key, _ in query}
    if "sslmode" in named:
        return url
    query.append(("sslmode", "verify-full"))
    if "sslrootcert" not in named:
        query.append(("sslrootcert", str(ca) if ca is not None else "system"))
    return urlunsplit(parts._replace(query=urlencode(query)))
