"""What the client handler needs from a client's connection, whatever carries it.

A client reaches a worker over plain TCP, TCP in TLS, or a WebSocket (the
browser; ``papertrader/web/carriage.py``). The connection (``client_connection.py``)
reads bytes, writes bytes and closes, with timeouts; it never needs to know
which of these it holds, so sessions, orders and every limit (idle and frame
deadlines, connection caps, the bound on unsent answers) are one code path.
The methods are a subset of ``socket.socket``'s, with its meanings, so a
socket (and an ``ssl.SSLSocket``) is a transport as it is, and the WebSocket
carriage implements the same few methods.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Protocol

#: What may be sent: bytes, or a view of a part of them.
Data = bytes | bytearray | memoryview


class ClientTransport(Protocol):
    """A client connection's byte stream: socket semantics, socket method names."""

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        """Up to ``bufsize`` bytes of the client's stream; b"" once it ended. TimeoutError
        after the ``settimeout`` seconds with nothing to read."""
        ...

    def send(self, data: Data, flags: int = 0) -> int:
        """Send some of ``data``; how many bytes were taken."""
        ...

    def sendall(self, data: Data, flags: int = 0) -> None:
        """Send all of ``data`` (TimeoutError if the client does not take it in time)."""
        ...

    def settimeout(self, value: float | None) -> None: ...

    def setsockopt(self, level: int, optname: int, value: int, /) -> None: ...

    def shutdown(self, how: int, /) -> None:
        """SHUT_RD ends the reading (the handler's loop sees the end), sending still works."""
        ...

    def close(self) -> None: ...

    def fileno(self) -> int:
        """The descriptor of the underlying socket (to wait for it to become readable)."""
        ...


#: The address gevent passes a handler with a connection: (host, port, ...).
Address = Any


def closed_by_peer(sock: ClientTransport) -> bool:
    """Once the descriptor is readable: True if the client ended its stream (EOF), False
    if bytes wait (a pipelined request). An ``ssl.SSLSocket`` refuses MSG_PEEK, so for
    TLS the TCP stream under it is looked at: EOF there is the client gone too."""
    try:
        try:
            return sock.recv(1, socket.MSG_PEEK) == b""
        except ValueError:
            with socket.socket(fileno=os.dup(sock.fileno())) as raw:
                return raw.recv(1, socket.MSG_PEEK) == b""
    except ConnectionResetError:
        return True
