"""Client management (spec 3.2.3): who is connected, and their sessions.

Connected clients live in process memory: they belong to this worker only.
Sessions live in Redis through :class:`~papertrader.store.sessions.SessionStore`,
so a session given out here is valid on every worker (the connectionless
model), and expiring it is Redis's TTL. Verified sessions are also kept in
memory (:mod:`papertrader.worker.session_cache`) until they expire or a logout
is announced, so most requests need no Redis round trip. Every session check is made against
the address the client connects from, so a stolen session id is useless from
another machine.
"""

from __future__ import annotations

import ipaddress
import itertools
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

from loguru import logger

from papertrader.store.sessions import Session
from papertrader.worker.session_cache import SessionCache

#: A session's "last used" (its owner's session list) is written at most this often.
TOUCH_INTERVAL = 60.0
MAX_TOUCHED = 100_000


def normalise_ip(host: str) -> str:
    """The client's IP as sessions record it: IPv4-mapped IPv6 shown as plain IPv4.

    A dual-stack listener sees IPv4 clients as ``::ffff:a.b.c.d``; without this
    the same client would look like two addresses to the session IP check.
    """
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def shown(text: str, limit: int = 40) -> str:
    """A client-supplied string for a log line: quoted, escaped, and cut to ``limit``."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def short_id(session_id: uuid.UUID) -> str:
    """The first 8 hex digits: enough to follow a session in the log, useless to steal."""
    return session_id.hex[:8]


@dataclass
class ClientInfo:
    """One connected client (the WorkerState of spec 2.4.7 keeps a list of these)."""

    client_id: int
    ip: str
    port: int
    connected_at: datetime
    session_id: uuid.UUID | None = None
    username: str | None = None

    @property
    def label(self) -> str:
        """How log lines name this client."""
        who = f" ({self.username})" if self.username else ""
        return f"client #{self.client_id} {self.ip}:{self.port}{who}"


class ClientManager:
    """Connected clients of this worker, and session checks for them."""

    def __init__(self, sessions: SessionCache) -> None:
        self.sessions = sessions
        self._clients: dict[int, ClientInfo] = {}
        self._ids = itertools.count(1)
        self.total_connections = 0
        self._touched: dict[uuid.UUID, float] = {}

    # connected clients -----------------------------------------------------
    def connect(self, host: str, port: int) -> ClientInfo:
        client = ClientInfo(next(self._ids), normalise_ip(host), port, datetime.now(timezone.utc))
        self._clients[client.client_id] = client
        self.total_connections += 1
        return client

    def disconnect(self, client: ClientInfo) -> None:
        self._clients.pop(client.client_id, None)

    @property
    def count(self) -> int:
        return len(self._clients)

    @property
    def logged_in(self) -> int:
        """Connected clients whose last request carried a valid session."""
        return sum(1 for client in self._clients.values() if client.session_id is not None)

    def snapshot(self) -> list[ClientInfo]:
        return list(self._clients.values())

    # sessions ----------------------------------------------------------------
    def open_session(self, client: ClientInfo, session_id: uuid.UUID) -> Session:
        """Give the client the session the master made for its sign-in (checked in Redis
        against the client's address), or SessionError."""
        session = self.sessions.get(session_id, client.ip, fresh=True)
        self.sessions.remember(session)
        self._attach(client, session)
        self.touch(client, session)
        logger.info(
            f"{client.label}: logged in, session {short_id(session.session_id)}... "
            f"until {session.expires_at:%Y-%m-%d %H:%M:%S} UTC"
        )
        return session

    def check_session(
        self, client: ClientInfo, session_id: uuid.UUID, fresh: bool = False
    ) -> Session:
        """The live session for this client's address, or SessionError.

        ``fresh``: verified in Redis, not in this worker's session cache.
        """
        session = self.sessions.get(session_id, client.ip, fresh)
        self._attach(client, session)
        self.touch(client, session)
        return session

    def touch(self, client: ClientInfo, session: Session) -> None:
        """Note when and from where the session was used, at most once a minute."""
        now = time.monotonic()
        if now - self._touched.get(session.session_id, -TOUCH_INTERVAL) < TOUCH_INTERVAL:
            return
        if len(self._touched) >= MAX_TOUCHED:
            self._touched.clear()
        self._touched[session.session_id] = now
        self.sessions.store.touch(session, client.ip)

    def end_session(self, client: ClientInfo, session: Session) -> None:
        """The master ended the session: forget it here at once (the others hear of it
        on ``pt:sessions:ended``)."""
        self.sessions.forget(session.session_id)
        if client.session_id == session.session_id:
            client.session_id = None
        logger.info(f"{client.label}: logged out, session {short_id(session.session_id)}...")

    @staticmethod
    def _attach(client: ClientInfo, session: Session) -> None:
        client.session_id = session.session_id
        client.username = session.username
