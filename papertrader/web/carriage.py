"""The WebSocket carriage: a browser's binary messages as the client handler's byte stream.

After the upgrade (``server.py``) a WebSocket connection is handed to the
same ``ClientHandler`` as a TCP or TLS client, wrapped in
:class:`WebSocketStream`, which has the few socket methods the handler uses
(``papertrader/worker/transport.py``). So sessions, orders, the idle and
frame deadlines, connection caps and the bound on unsent answers are the
same code for every client.

How the carriage maps (docs/PROTOCOL.md section 15):

* the payloads of the client's **binary** messages, in order, are the byte
  stream the protocol decoder reads: like TCP segments, message boundaries
  mean nothing to it, so a frame split across messages is put back together
  (and the usual "part of a frame, then nothing" deadline applies);
* every batch of answers the handler sends is **one binary message** holding
  one or more whole frames, never part of one;
* a **text** message is not PaperTrader: the connection is closed with
  WebSocket code 1003 (unsupported data) and a reason saying so;
* pings are answered at once; a close from the client ends the stream (the
  handler then sees end-of-stream, as for a TCP FIN) and is answered;
* ``shutdown(SHUT_RD)`` (a worker going out of service) ends the reading
  while the answer in progress can still be sent, then the close says 1001
  (going away).

wsproto (sans-IO, from h11's family) does the WebSocket framing, masking,
fragmentation, UTF-8 checks of text and close handshake; this module only
moves bytes between it and the socket, with the handler's timeouts.
"""

from __future__ import annotations

import os
import socket
import ssl
import time

import gevent
from loguru import logger
from wsproto.connection import Connection, ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, TextMessage
from wsproto.frame_protocol import CloseReason

from papertrader.worker.transport import Data

#: The subprotocol a browser must offer (and the server names) on the upgrade.
SUBPROTOCOL = "papertrader.v1"
#: Seconds allowed for the closing handshake's last frame.
CLOSE_TIMEOUT = 2.0
TEXT_REFUSED = (
    "PaperTrader frames travel in binary WebSocket messages (docs/PROTOCOL.md section 15)"
)


def shut_read(sock: socket.socket) -> None:
    """End the reading of ``sock`` so a blocked recv returns b"", keeping TLS for the sends
    that follow (``SSLSocket.shutdown`` would drop TLS first, so a duplicate descriptor
    of the same connection is shut instead)."""
    try:
        if isinstance(sock, ssl.SSLSocket):
            with socket.socket(fileno=os.dup(sock.fileno())) as duplicate:
                duplicate.shutdown(socket.SHUT_RD)
        else:
            sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass


class WebSocketStream:
    """A ``ClientTransport`` over one accepted WebSocket (see the module doc)."""

    def __init__(self, sock: socket.socket, ws: Connection, peer: str, read_size: int) -> None:
        self._sock = sock
        self._ws = ws
        self.peer = peer
        self._read_size = read_size
        self._data = bytearray()
        self._timeout: float | None = None
        self._ended = False
        self._read_shut = False
        self._closed = False
        #: The WebSocket close code and reason, once the connection closed (for the log).
        self.close_code: int | None = None
        self.close_reason = ""
        self._process()  # bytes that came with the upgrade request

    # the ClientTransport methods ------------------------------------------------------
    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if flags & socket.MSG_PEEK:
            if self._data or self._ended:
                return bytes(self._data[:bufsize])
            return bytes(self._sock.recv(bufsize, flags))
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        while not self._data and not self._ended:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("timed out")
                self._sock.settimeout(left)
            else:
                self._sock.settimeout(None)
            raw = self._sock.recv(self._read_size)
            if not raw:
                self._ended = True
                if not self._read_shut:  # the TCP connection ended without a close frame
                    self.close_code = int(CloseReason.ABNORMAL_CLOSURE)
                break
            self._ws.receive_data(raw)
            self._process()
        chunk = bytes(self._data[:bufsize])
        del self._data[:bufsize]
        return chunk

    def send(self, data: Data, flags: int = 0) -> int:
        if not data:
            return 0
        if self._ws.state is not ConnectionState.OPEN:
            raise BrokenPipeError("the WebSocket is closing")
        self._sock.settimeout(self._timeout)
        self._sock.sendall(self._ws.send(Message(data=bytes(data))))
        return len(data)

    def sendall(self, data: Data, flags: int = 0) -> None:
        self.send(data)

    def settimeout(self, value: float | None) -> None:
        self._timeout = value

    def setsockopt(self, level: int, optname: int, value: int, /) -> None:
        self._sock.setsockopt(level, optname, value)

    def shutdown(self, how: int, /) -> None:
        if how in (socket.SHUT_RD, socket.SHUT_RDWR):
            self._read_shut = True
            shut_read(self._sock)
        if how in (socket.SHUT_WR, socket.SHUT_RDWR):
            self._send_close(CloseReason.GOING_AWAY, "the worker is going out of service")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._read_shut:
            self._send_close(CloseReason.GOING_AWAY, "this worker is out of service")
        else:
            self._send_close(CloseReason.NORMAL_CLOSURE, "")
        try:
            self._sock.close()
        except OSError:
            pass

    def fileno(self) -> int:
        return self._sock.fileno()

    # wsproto events --------------------------------------------------------------------
    def _process(self) -> None:
        for event in self._ws.events():
            if isinstance(event, BytesMessage):
                self._data += event.data
            elif isinstance(event, TextMessage):
                logger.info("WebSocket client {} sent a text message: closing (1003)", self.peer)
                self._send_close(CloseReason.UNSUPPORTED_DATA, TEXT_REFUSED)
                self._ended = True
                return
            elif isinstance(event, Ping):
                self._write(self._ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self.close_code, self.close_reason = int(event.code), event.reason or ""
                if self._ws.state is ConnectionState.REMOTE_CLOSING:
                    self._write(self._ws.send(event.response()))
                else:  # a framing error found by wsproto: tell the client which
                    logger.info(
                        "WebSocket client {} broke the framing: {} ({})",
                        self.peer, event.reason, int(event.code),
                    )  # fmt: skip
                    self._send_close(event.code, event.reason or "")
                self._ended = True
                return

    def _send_close(self, code: int, reason: str) -> None:
        if self._ws.state not in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            return
        if self.close_code is None:
            self.close_code, self.close_reason = int(code), reason
        self._write(self._ws.send(CloseConnection(code=code, reason=reason[:120])))

    def _write(self, data: bytes) -> None:
        """Best effort for control frames: a client that stopped reading loses them."""
        try:
            with gevent.Timeout(CLOSE_TIMEOUT, False):
                self._sock.settimeout(None)
                self._sock.sendall(data)
        except OSError:
            pass
