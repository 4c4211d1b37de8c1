"""What a worker may say once the handshake proved who it is (spec 3.1.5; issue 10).

The GPG handshake (``master/handshake.py``) proves *which* registered worker
is on the line. That is not enough: a worker that could announce any address
and region would put a phishing address into every client's getWorkerList.
So a worker is pinned at registration (``pt workers register NAME --address
HOST:PORT --region R``) and its LINK_HELLO must say exactly that; anything
else is refused, with the reason in the master's log.

``hello_problem`` is that check, as a pure function of the registry record
and the hello, so it reads (and is tested) in one place. The other admission
rule, one live link per worker, needs the registry of links and lives there
(``WorkerRegistry.claim``).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from papertrader.config.settings import join_host_port, split_host_port
from papertrader.protocol import Message
from papertrader.store.workers import WorkerRecord

#: Longest client address a worker may announce (a host name and a port).
MAX_CLIENT_ADDRESS = 255


def normalise_address(text: str) -> str | None:
    """``host:port`` in one spelling (host lower-case, IPv6 in brackets), or None."""
    try:
        host, port = split_host_port(text)
    except ValueError:
        return None
    return join_host_port(host.lower(), port)


def hello_problem(record: WorkerRecord, hello: Message) -> str | None:
    """Why this LINK_HELLO is refused (a sentence for the master's log), or None."""
    announced = str(hello.arg("client_address")).strip()
    if not announced or len(announced) > MAX_CLIENT_ADDRESS:
        return f"worker {record.name} sent no usable client_address in LINK_HELLO"
    if record.address is None or record.region is None:
        missing = " and ".join(
            what
            for what, value in (("address", record.address), ("region", record.region))
            if value is None
        )
        return (
            f"worker {record.name} has no registered {missing}: pin it with `pt workers "
            f"register {record.name} --key KEY --ip CIDR --address HOST:PORT --region REGION`"
        )
    if normalise_address(announced) != normalise_address(record.address):
        return (
            f"worker {record.name} announced the client address {announced[:80]!r}, but it is "
            f"registered with {record.address!r}: refused (a worker may not advertise another "
            "address; re-register it if it moved)"
        )
    region = str(hello.arg("region")).strip()
    if region != record.region:
        return (
            f"worker {record.name} announced the region {region[:64]!r}, but it is registered "
            f"in {record.region!r}: refused (re-register it to move it)"
        )
    return None


#: Longest web origin a worker may announce.
MAX_WEB_ORIGIN = 300
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def web_origin_refusal(origin: str, client_address: str) -> str | None:
    """Why a worker's LINK_WEB_ORIGIN is not listed (None: it is).

    The page's origin is pinned like the client address: it must be on the
    host of the worker's registered address, https (http only on loopback), so a
    worker cannot send browsers elsewhere with their sessions during failover.
    """
    if len(origin) > MAX_WEB_ORIGIN:
        return "too long"
    try:
        parts = urlsplit(origin)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return "not an origin"
    if parts.path not in ("", "/") or parts.query or parts.fragment or not parts.hostname:
        return "not an origin (scheme://host[:port] only)"
    try:
        registered_host, _ = split_host_port(client_address)
    except ValueError:
        return "the worker has no usable registered address"
    host = parts.hostname.lower()
    if host != registered_host.lower():
        return (
            f"its host {host!r} is not the host of the worker's registered address "
            f"{client_address!r} (re-register the worker with that host)"
        )
    if parts.scheme == "http" and host in _LOOPBACK_HOSTS:
        return None
    if parts.scheme != "https":
        return "a web page off this machine must be https"
    return None
