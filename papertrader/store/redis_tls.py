"""TLS for Redis connections: a ``rediss://`` URL is verified, chain and host name.

redis-py already verifies by default for ``rediss://``; the options are spelled
out here so that a change of its defaults cannot turn verification off, and
so that a URL without ``ssl_ca_certs`` trusts the process's own CA
(``tls_ca``: the deployment's private CA that also issued the Redis server's
certificate) instead of only the system trust store. Options given in the
URL's query (``?ssl_ca_certs=/path/ca.pem``) win: redis-py applies them last.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from urllib.parse import urlsplit


def is_tls_url(url: str) -> bool:
    """Whether ``url`` names Redis over TLS (``rediss://``)."""
    return urlsplit(url).scheme == "rediss"


def redis_tls_options(url: str, ca: Path | None) -> dict[str, object]:
    """Keyword arguments for ``from_url(url, ...)``: none for a plaintext URL."""
    if not is_tls_url(url):
        return {}
    options: dict[str, object] = {
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
        "ssl_min_version": ssl.TLSVersion.TLSv1_2,
    }
    if ca is not None:
        options["ssl_ca_certs"] = str(ca)
    return options
