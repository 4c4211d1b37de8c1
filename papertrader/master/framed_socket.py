"""A socket that reads whole messages and writes whole answers, for the master's port.

Both kinds of peer on port 2048 go through it: a getWorkerList client's
frames are read as they come, a worker's, after the handshake, are opened
with the link key first (``start_sealing``), so a record that does not open
ends the link (``LinkTampered``). Writes are serialised, so the answers of
a link's concurrent requests never interleave.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Sequence

import gevent
import gevent.lock

from papertrader.limits.deadlines import DeadlineExceeded, recv_before
from papertrader.protocol import FrameDecoder, Message, NeedData, encode_message
from papertrader.protocol.link_seal import Direction, LinkKeys, Opener, Sealer, SealError


class ConnectionClosed(Exception):
    """The peer closed the connection, or it timed out."""


class LinkTampered(ConnectionClosed):
    """A sealed record did not open: the link cannot be trusted any more."""


class FramedSocket:
    """A socket that reads whole messages and writes whole answers, one writer at a time."""

    def __init__(
        self, sock: socket.socket, max_data_size: int, receive_limit: int | None = None
    ) -> None:
        self.sock = sock
        self.max_data_size = max_data_size
        #: Frames from the peer may be smaller than ours until the link is sealed.
        self.decoder = FrameDecoder(receive_limit or max_data_size)
        self._write_lock = gevent.lock.Semaphore()
        self.closed_because: str | None = None
        self._sealer: Sealer | None = None
        self._opener: Opener | None = None

    def start_sealing(self, keys: LinkKeys, worker_uuid: uuid.UUID) -> None:
        """From now on every frame both ways is sealed with its direction's link key."""
        if self.decoder.buffered:
            raise ConnectionClosed("the worker sent frames before the handshake finished")
        self.decoder = FrameDecoder(self.max_data_size)  # a sealed worker may send full frames
        out, into = Direction.MASTER_TO_WORKER, Direction.WORKER_TO_MASTER
        self._sealer = Sealer(keys.key(out), worker_uuid, out)
        self._opener = Opener(keys.key(into), worker_uuid, into, self.max_data_size)

    def read(self, deadline: float | None = None, what: str = "a whole frame") -> Message:
        """The next message; ProtocolError for a bad frame, ConnectionClosed at the end.

        ``deadline`` (time.monotonic): the whole message must have arrived by then.
        """
        while True:
            message = self.decoder.next_message()
            if not isinstance(message, NeedData):
                return message
            try:
                if deadline is None:
                    data = self.sock.recv(self.decoder.max_frame_size)
                else:
                    data = recv_before(self.sock, self.decoder.max_frame_size, deadline, what)
            except DeadlineExceeded as exc:
                raise ConnectionClosed(f"did not send {exc} in time") from None
            except OSError as exc:  # includes socket.timeout
                why = self.closed_because or str(exc) or type(exc).__name__
                raise ConnectionClosed(why) from None
            if not data:
                raise ConnectionClosed("closed by the peer")
            if self._opener is None:
                self.decoder.receive_data(data)
                continue
            self._opener.receive_data(data)
            try:
                while (frame := self._opener.next_frame()) is not None:
                    self.decoder.receive_data(frame)
            except SealError as exc:
                raise LinkTampered(str(exc)) from None

    def send(self, messages: Sequence[Message]) -> None:
        """Encode every message first, then write them in one piece (atomic per answer).

        A large answer (a day of minute bars is several packets) yields to the event
        loop between packets, so encoding it never stalls heartbeats and other links.
        """
        frames = []
        for index, message in enumerate(messages):
            frames.append(encode_message(message, self.max_data_size))
            if index % 4 == 3:
                gevent.sleep(0)
        with self._write_lock:
            sealer = self._sealer
            payload = b"".join(frames if sealer is None else [sealer.seal(f) for f in frames])
            self.sock.sendall(payload)

    def shutdown(self, reason: str = "closed by the master") -> None:
        """Make the reading greenlet see the end of the stream (safe to call twice)."""
        self.closed_because = self.closed_because or reason
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
