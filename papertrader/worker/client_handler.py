"""The worker's client port: admit a connection or turn it away, then serve it.

gevent's StreamServer calls the ``ClientHandler`` once per connection, in the
connection's own greenlet. It holds what every connection shares (settings,
the session, order and quote modules, the connection caps of
``limits/connections.py``), turns a client away with an ERROR saying why when
the worker is out of service or a cap is reached, and closes every
connection when the master refuses the worker (``shed``). Each admitted
connection is served by a ``ClientConnection`` (``client_connection.py``).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import gevent
import gevent.socket
from loguru import logger

from papertrader import metrics
from papertrader.config import Settings
from papertrader.limits.connections import ConnectionLimits
from papertrader.protocol import (
    ConnectionStateCode,
    ErrorCode,
    Instruction,
    Message,
    encode_message,
    max_chunk_size,
)
from papertrader.protocol.lean import Encoded
from papertrader.worker.auth_tunnel import AuthTunnel
from papertrader.worker.cache import QuoteCache
from papertrader.worker.client_connection import FAREWELL_TIMEOUT, ClientConnection
from papertrader.worker.client_management import ClientManager
from papertrader.worker.forwarding import Commands, UserData
from papertrader.worker.history import PriceHistory
from papertrader.worker.orders import OrderDesk
from papertrader.worker.transport import ClientTransport


class ClientHandler:
    """What every client connection shares; the StreamServer calls it per connection."""

    def __init__(
        self,
        settings: Settings,
        clients: ClientManager,
        cache: QuoteCache,
        tunnel: AuthTunnel,
        orders: OrderDesk,
        user_data: UserData,
        history: PriceHistory | None = None,
        commands: Commands | None = None,
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.cache = cache
        self.tunnel = tunnel
        self.orders = orders
        self.user_data = user_data
        self.history = history
        self.commands = commands
        self.chunk_size = max_chunk_size(settings.max_data_size)
        #: stateSwitchSuccess for each state, encoded once (the lean path's answer).
        self.switched = {
            int(state): Encoded(
                [Message(Instruction.STATE_SWITCH_SUCCESS, (int(state),))], settings.max_data_size
            )
            for state in ConnectionStateCode
        }
        #: Why this worker may not serve now (the master refused or booted it), or None.
        self.out_of_service: Callable[[], str | None] = lambda: None
        self._sockets: dict[int, ClientTransport] = {}
        self.limits = ConnectionLimits(
            settings.max_connections, settings.max_connections_per_address
        )

    def shed(self, reason: str) -> None:
        """Close every client connection once its request in progress is answered (the
        read side only is shut: answers still go out, then the client sees the end)."""
        if self._sockets:
            logger.warning(f"out of service ({reason}): closing {len(self._sockets)} clients")
        for index, sock in enumerate(list(self._sockets.values())):
            try:
                sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass
            if index % 256 == 255:
                gevent.sleep(0)  # thousands of clients: let heartbeats and others run

    def _turn_away(
        self,
        sock: ClientTransport,
        host: str,
        port: int,
        reason: str,
        code: ErrorCode = ErrorCode.UNAVAILABLE,
        told: str = "this worker is out of service (the master refused it): "
        "connect to another worker (getWorkerList on the master)",
    ) -> None:
        """Tell a new client why it cannot be served here, then close."""
        farewell = Message(Instruction.ERROR, (int(code), told))
        try:
            with gevent.Timeout(FAREWELL_TIMEOUT, False):
                sock.sendall(encode_message(farewell, self.settings.max_data_size))
        except OSError:
            pass
        finally:
            sock.close()
        metrics.CLIENTS_TURNED_AWAY.inc()
        logger.info(f"turned away client {host}:{port}: {reason}")

    def __call__(self, sock: ClientTransport, address: Any) -> None:
        """StreamServer handle: serve one client until it leaves; never raises."""
        host, port = str(address[0]), int(address[1])
        refused = self.out_of_service()
        if refused is not None:
            self._turn_away(sock, host, port, f"out of service ({refused})")
            return
        subject, refusal = self.limits.admit(host)
        if refusal is not None:
            self._turn_away(sock, host, port, refusal.reason, refusal.code, refusal.reason)
            return
        try:
            self._serve(sock, host, port)
        finally:
            self.limits.release(subject)

    def _serve(self, sock: ClientTransport, host: str, port: int) -> None:
        client = self.clients.connect(host, port)
        metrics.CLIENT_CONNECTIONS.inc()
        self._sockets[client.client_id] = sock
        logger.info(f"{client.label}: connected ({self.clients.count} clients)")
        try:  # answers are small frames: do not let Nagle hold them for the client's ACK
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        connection = ClientConnection(self, sock, client)
        try:
            connection.serve()
        except Exception:  # a bug: this client's loss only, logged once
            logger.exception(f"{client.label}: handler failed")
        finally:
            self._sockets.pop(client.client_id, None)
            try:
                sock.close()
            except OSError:
                pass
            self.clients.disconnect(client)
            logger.info(
                f"{client.label}: disconnected ({connection.close_reason}; "
                f"{self.clients.count} clients)"
            )
