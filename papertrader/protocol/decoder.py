"""Incremental frame decoder: bytes in, whole messages out, split at any byte.

The decoder never holds more than one frame: it reads the 80-byte header,
judges it (``check_header``), and only then waits for the body. A frame whose
header is bad but whose size is sane is skipped, so one mistaken message costs
the peer a failure return, not its connection.
"""

from __future__ import annotations

from typing import Final

from papertrader.protocol.codes import Instruction
from papertrader.protocol.errors import ErrorCode, ProtocolError
from papertrader.protocol.header import HEADER_SIZE, Header, unpack_header
from papertrader.protocol.message import DEFAULT_MAX_DATA_SIZE, Message, check_header, decode_body


class NeedData:
    """Sentinel returned by ``next_message`` when a frame is not complete yet."""

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()


class FrameDecoder:
    """Feed it bytes with ``receive_data``; pull messages with ``next_message``."""

    def __init__(self, max_data_size: int = DEFAULT_MAX_DATA_SIZE) -> None:
        self.max_data_size = max_data_size
        self._buffer = bytearray()
        self._header: Header | None = None
        self._instruction: Instruction | None = None
        self._skip = 0
        self._broken: ProtocolError | None = None

    @property
    def max_frame_size(self) -> int:
        return HEADER_SIZE + self.max_data_size

    @property
    def buffered(self) -> int:
        """Bytes held but not yet turned into a message."""
        return len(self._buffer)

    @property
    def mid_frame(self) -> bool:
        """True while part of a frame has arrived: the idle timer uses this."""
        return bool(self._buffer) or self._header is not None or self._skip > 0

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the peer. Callers read at most ``max_frame_size`` at a time."""
        if self._broken is None:
            self._buffer += data

    def at_frame_start(self) -> bytearray | None:
        """The buffer, when it starts at a frame boundary (no header pending, nothing
        to skip, not broken): where ``protocol/lean.py`` looks for its frames."""
        if self._header is None and not self._skip and self._broken is None:
            return self._buffer
        return None

    def discard(self, size: int) -> None:
        """Drop ``size`` bytes from the front: a frame taken by the lean path."""
        del self._buffer[:size]

    def next_message(self) -> Message | NeedData:
        """The next whole message, or NEED_DATA.

        Raises ProtocolError for a bad frame. If ``error.fatal`` the stream can
        no longer be framed and every later call raises the same error.
        """
        if self._broken is not None:
            raise self._broken
        if self._skip:
            dropped = min(self._skip, len(self._buffer))
            del self._buffer[:dropped]
            self._skip -= dropped
            if self._skip:
                return NEED_DATA
        if self._header is None:
            if len(self._buffer) < HEADER_SIZE:
                return NEED_DATA
            raw = bytes(self._buffer[:HEADER_SIZE])
            del self._buffer[:HEADER_SIZE]
            try:
                header = unpack_header(raw)
                instruction = check_header(header, self.max_data_size)
            except ProtocolError as exc:
                if exc.fatal:
                    self._broken = exc
                    self._buffer.clear()
                elif exc.header is not None:
                    self._skip = exc.header.data_size
                raise
            self._header, self._instruction = header, instruction
        header, pending = self._header, self._instruction
        assert pending is not None
        instruction = pending
        if len(self._buffer) < header.data_size:
            return NEED_DATA
        data = bytes(self._buffer[: header.data_size])
        del self._buffer[: header.data_size]
        self._header = self._instruction = None
        return decode_body(header, instruction, data)


def decode_all(data: bytes, max_data_size: int = DEFAULT_MAX_DATA_SIZE) -> list[Message]:
    """Every message in ``data`` (which must end on a frame boundary): for tests and tools."""
    decoder = FrameDecoder(max_data_size)
    decoder.receive_data(data)
    messages: list[Message] = []
    while not isinstance(message := decoder.next_message(), NeedData):
        messages.append(message)
    if decoder.buffered:
        raise ProtocolError(
            ErrorCode.TRAILING_DATA, f"{decoder.buffered} bytes of an unfinished frame"
        )
    return messages
