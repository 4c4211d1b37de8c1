"""The server side of a TLS port: handshake first, then the protocol handler.

``TlsAcceptor`` wraps a ``StreamServer`` handle. For each new connection it
looks at the first byte without consuming it: a TLS ClientHello starts with
0x16 (a handshake record). Anything else is a client speaking the protocol in
plaintext; it gets ``refusal`` (an ERROR frame the caller built: "this port
speaks TLS") in plaintext and is closed, logged as one line, no traceback.
A failed or slow handshake (wrong CA on the client side shows up here as an
alert, a scanner, a client that stops sending) is also one log line; the
handshake must finish within ``HANDSHAKE_SECONDS``.

The handshake runs in the connection's own greenlet, so a slow one holds up
nobody else.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from typing import Any

import gevent
from loguru import logger

from papertrader.limits.deadlines import HANDSHAKE_SECONDS

#: First byte of a TLS record carrying a handshake message (the ClientHello).
TLS_HANDSHAKE_RECORD = 0x16
#: How long the plaintext refusal may take to send.
REFUSAL_SECONDS = 2.0
#: At most this much of a plaintext client's data is read (and dropped) before closing.
DRAIN_LIMIT = 64 * 1024

Handle = Callable[[Any, Any], None]


def _peer(address: Any) -> str:
    try:
        host, port = address[0], address[1]
    except (TypeError, IndexError):
        return str(address)
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


class TlsAcceptor:
    """A StreamServer handle: TLS handshake (or plaintext refusal), then ``handle``."""

    def __init__(self, handle: Handle, context: ssl.SSLContext, refusal: bytes, what: str) -> None:
        self.handle = handle
        self.context = context
        self.refusal = refusal
        #: What this port is, for the log ("client port", "master port").
        self.what = what

    def __call__(self, sock: socket.socket, address: Any) -> None:
        wrapped = self.accept(sock, _peer(address))
        if wrapped is not None:
            self.handle(wrapped, address)

    def accept(self, sock: socket.socket, peer: str) -> ssl.SSLSocket | None:
        """The TLS socket once the handshake is done; None (closed, logged) otherwise."""
        try:
            with gevent.Timeout(HANDSHAKE_SECONDS):
                first = sock.recv(1, socket.MSG_PEEK)
                if not first:
                    sock.close()
                    return None
                if first[0] != TLS_HANDSHAKE_RECORD:
                    self._refuse_plaintext(sock, peer)
                    return None
                return self.context.wrap_socket(sock, server_side=True)
        except gevent.Timeout:
            logger.info(
                "{}: TLS handshake with {} not finished within {:g} s",
                self.what, peer, HANDSHAKE_SECONDS,
            )  # fmt: skip
        except ssl.SSLError as exc:
            logger.info("{}: TLS handshake with {} failed: {}", self.what, peer, exc.reason or exc)
        except OSError as exc:
            why = exc.strerror or exc
            logger.info("{}: TLS handshake with {} failed: {}", self.what, peer, why)
        try:
            sock.close()
        except OSError:
            pass
        return None

    def _refuse_plaintext(self, sock: socket.socket, peer: str) -> None:
        logger.info(
            "{}: plaintext connection from {} refused (this port speaks TLS)", self.what, peer
        )
        try:
            with gevent.Timeout(REFUSAL_SECONDS, False):
                sock.sendall(self.refusal)
                sock.shutdown(socket.SHUT_WR)
                # Read what the client sent until it closes: closing with unread data
                # would reset the connection before the client read the refusal.
                drained = 0
                while drained < DRAIN_LIMIT:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    drained += len(chunk)
        except OSError:
            pass
        finally:
            sock.close()
