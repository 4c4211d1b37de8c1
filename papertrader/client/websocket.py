"""A blocking WebSocket to a worker's web port: the browser's carriage, from Python.

Tests and benchmarks use it to speak to the WebSocket endpoint exactly as a
browser does (an ``Origin`` header, the ``papertrader.v1`` subprotocol,
binary messages), without a browser. wsproto does the WebSocket side;
frames inside are ordinary protocol frames (docs/PROTOCOL.md section 15).
"""

from __future__ import annotations

import socket
import ssl
from urllib.parse import urlsplit

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError

from papertrader.client.errors import ServerUnreachable

SUBPROTOCOL = "papertrader.v1"


class WebSocketRefused(ServerUnreachable):
    """The upgrade was refused: ``status`` and the server's sentence."""

    def __init__(self, where: str, status: int, text: str) -> None:
        super().__init__(where, f"WebSocket refused with {status}: {text}".strip())
        self.status = status
        self.text = text


class WebSocketConnection:
    """One WebSocket: ``send`` bytes as one binary message, ``receive`` the next message."""

    def __init__(
        self,
        url: str,
        origin: str | None,
        timeout: float = 30.0,
        subprotocols: tuple[str, ...] = (SUBPROTOCOL,),
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(url)
        self.url = url
        host = parts.hostname or "127.0.0.1"
        port = parts.port or (443 if parts.scheme == "wss" else 80)
        sock = socket.create_connection((host, port), timeout=timeout)
        if parts.scheme == "wss":
            context = ssl_context or ssl.create_default_context()
            sock = context.wrap_socket(sock, server_hostname=host)
        self.sock = sock
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.close_code: int | None = None
        self.close_reason = ""
        self._pending: list[Event] = []
        headers = [(b"origin", origin.encode("ascii"))] if origin is not None else []
        netloc = parts.netloc
        self.sock.sendall(
            self.ws.send(
                Request(
                    host=netloc,
                    target=parts.path or "/",
                    subprotocols=list(subprotocols),
                    extra_headers=headers,
                )
            )
        )
        status: int | None = None
        body = b""
        while True:
            for event in self._events():
                if isinstance(event, AcceptConnection):
                    self.subprotocol = event.subprotocol
                    return
                if isinstance(event, RejectConnection):
                    status = event.status_code
                    if not event.has_body:
                        raise WebSocketRefused(url, status, "")
                elif isinstance(event, RejectData):
                    body += event.data
                    if event.body_finished:
                        raise WebSocketRefused(url, status or 0, body.decode("utf-8", "replace"))

    def _events(self) -> list[Event]:
        data = self.sock.recv(65536)
        self.ws.receive_data(data or None)
        return list(self.ws.events())

    def send(self, data: bytes) -> None:
        self.sock.sendall(self.ws.send(Message(data=data)))

    def send_text(self, text: str) -> None:
        self.sock.sendall(self.ws.send(Message(data=text)))

    def receive(self) -> bytes | None:
        """The next whole binary message; None once the server closed (see close_code)."""
        chunks: list[bytes] = []
        while True:
            events = self._pending or self._events()
            self._pending = []
            for index, event in enumerate(events):
                if isinstance(event, BytesMessage):
                    chunks.append(bytes(event.data))
                    if event.message_finished:
                        self._pending = events[index + 1 :]
                        return b"".join(chunks)
                elif isinstance(event, TextMessage):
                    raise ValueError("the server sent a text message")
                elif isinstance(event, Ping):
                    self.sock.sendall(self.ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    self.close_code, self.close_reason = int(event.code), event.reason or ""
                    try:
                        self.sock.sendall(self.ws.send(event.response()))
                    except (OSError, LocalProtocolError):  # the connection is ending anyway
                        pass
                    return None

    def close(self) -> None:
        try:
            self.sock.sendall(self.ws.send(CloseConnection(code=1000)))
        except (OSError, LocalProtocolError):  # best effort
            pass
        self.sock.close()
