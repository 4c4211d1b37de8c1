"""How settings write addresses: ``host:port`` pairs, and URLs shown safely.

``host:port`` is the text of every address setting (an IPv6 host in brackets);
:func:`split_host_port` and :func:`join_host_port` go between it and (host, port).

URLs may carry passwords, so a URL value is never echoed back: error messages,
logs and ``repr(settings)`` show it through :func:`redact_url`, with the password
and query string masked.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_HOST_PORT_RE = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^\s:\[\]]+)):(?P<port>[0-9]{1,5})"
)
#: What :func:`redact_url` gives for anything that does not parse as a URL.
HIDDEN = "<hidden>"


def split_host_port(text: str) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6]:port"`` as (host, port); ValueError if malformed."""
    match = _HOST_PORT_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not host:port")
    port = int(match["port"])
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is not from 1 to 65535")
    return match["v6"] or match["host"], port


def join_host_port(host: str, port: int) -> str:
    """Inverse of :func:`split_host_port`: IPv6 addresses get their brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def redact_url(url: str) -> str:
    """Return ``url`` with its password and query string masked, for logs and errors.

    Anything that does not parse as ``scheme://host...`` is hidden entirely: a
    malformed URL may well be a bare password pasted in the wrong place.
    """
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError:
        return HIDDEN
    if not parts.scheme or not (parts.netloc or parts.path):
        return HIDDEN
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{hostport}" if ":" in userinfo else f"{user}@{hostport}"
    shown = f"{parts.scheme}://{netloc}{parts.path}"
    if parts.query:
        shown += "?***"
    return shown
