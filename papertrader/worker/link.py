"""What the worker's modules see of its link to the master.

The client-facing modules (authorization tunnel, forwarding, price history,
the web page's worker list) forward requests through a ``Link``: process 0 of
a worker holds the real one (``master_link.MasterLink``), its other processes
a ``link_relay.RelayLink`` through process 0's. Both raise ``LinkError`` for a
request that got no answer; its ``sent`` says whether the master can have
acted on it, which decides what a client is told about an order.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol

from papertrader.protocol import ErrorCode, Message


class LinkError(Exception):
    """A forwarded request got no answer; ``code``/``reason`` go back to the client.

    ``sent`` is False when the request never left the worker (no link), so the
    master cannot have acted on it.
    """

    def __init__(
        self, reason: str, code: ErrorCode = ErrorCode.UNAVAILABLE, *, sent: bool = True
    ) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.sent = sent


class LinkRefused(Exception):
    """The master answered LINK_HELLO with LINK_REFUSED."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class LinkDropped(Exception):
    """The link ended: closed by the master, silent too long, or unreadable."""


@dataclass(frozen=True)
class LinkIdentity:
    """What the worker tells the master about itself in LINK_HELLO."""

    worker_uuid: uuid.UUID
    name: str
    region: str
    client_address: str  # host:port clients should use
    web_origin: str = ""  # where browsers load our page (LINK_WEB_ORIGIN); "" = no web port


class Link(Protocol):
    """What the worker's modules use of a link to the master: a ``MasterLink``, or in a
    worker's processes 1..N-1 a ``link_relay.RelayLink`` through process 0's."""

    identity: LinkIdentity
    out_of_service: str | None
    request_timeout: float
    connections: int

    @property
    def connected(self) -> bool: ...

    @property
    def where(self) -> str: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def wait_connected(self, timeout: float | None = None) -> bool: ...

    def request(self, message: Message, timeout: float | None = None) -> Message | bytes: ...
