"""The data transfer mechanism: a payload cut into packets 1..max, and put back.

A result too large for one frame travels as DATA messages numbered 1..max, in
order, each carrying one chunk. The receiver checks the numbering so a lost,
repeated or reordered packet is an error, never silently wrong data.
"""

from __future__ import annotations

import uuid

from papertrader.protocol.codes import Instruction
from papertrader.protocol.errors import ErrorCode, LocalProtocolError, ProtocolError
from papertrader.protocol.header import NIL
from papertrader.protocol.message import DEFAULT_MAX_DATA_SIZE, Message
from papertrader.protocol.values import Value, decode_payload, encode_payload

#: Tag byte + u32 length in front of each chunk.
CHUNK_OVERHEAD = 5


def max_chunk_size(max_data_size: int = DEFAULT_MAX_DATA_SIZE) -> int:
    """The largest chunk that fits in one DATA frame."""
    return max_data_size - CHUNK_OVERHEAD


def split_payload(
    payload: bytes,
    chunk_size: int = max_chunk_size(),
    *,
    request_id: int = 0,
    session_id: uuid.UUID = NIL,
    worker_uuid: uuid.UUID = NIL,
) -> list[Message]:
    """DATA packets 1..max for ``payload`` (an empty payload is one empty packet)."""
    if chunk_size < 1:
        raise LocalProtocolError(ErrorCode.BAD_PACKET_NUMBER, "chunk size must be at least 1")
    chunks = [payload[i : i + chunk_size] for i in range(0, len(payload), chunk_size)] or [b""]
    total = len(chunks)
    if total > 0xFFFFFFFF:
        raise LocalProtocolError(
            ErrorCode.FRAME_TOO_LARGE, "payload needs more than 2**32-1 packets"
        )
    return [
        Message(
            Instruction.DATA,
            (chunk,),
            request_id=request_id,
            session_id=session_id,
            worker_uuid=worker_uuid,
            packet_number=number,
            packet_max=total,
        )
        for number, chunk in enumerate(chunks, start=1)
    ]


def packets_for(
    value: Value,
    chunk_size: int = max_chunk_size(),
    *,
    request_id: int = 0,
    session_id: uuid.UUID = NIL,
    worker_uuid: uuid.UUID = NIL,
) -> list[Message]:
    """Encode a result value and cut it into packets."""
    return split_payload(
        encode_payload(value),
        chunk_size,
        request_id=request_id,
        session_id=session_id,
        worker_uuid=worker_uuid,
    )


class Reassembler:
    """Collects the packets of one transfer and checks their numbering.

    ``max_payload`` bounds the memory one transfer may take, so a peer cannot
    announce a huge packet max and make us hold everything it sends.
    """

    def __init__(self, max_payload: int = 64 * 1024 * 1024) -> None:
        self.max_payload = max_payload
        self._chunks: list[bytes] = []
        self._size = 0
        self._max: int | None = None

    @property
    def expected(self) -> int:
        """The packet number that must come next."""
        return len(self._chunks) + 1

    @property
    def in_progress(self) -> bool:
        return self._max is not None

    def feed(self, packet: Message) -> bytes | None:
        """Add a packet; return the whole payload after the last one, else None."""
        if packet.instruction is not Instruction.DATA:
            raise ProtocolError(
                ErrorCode.PACKET_MISSING, f"expected a data packet, got {packet.instruction.name}"
            )
        number, maximum = packet.packet_number, packet.packet_max
        if self._max is None:
            self._max = maximum
        elif maximum != self._max:
            self._fail(
                ErrorCode.PACKET_MAX_CHANGED, f"packet max changed from {self._max} to {maximum}"
            )
        if number < self.expected:
            self._fail(ErrorCode.PACKET_DUPLICATE, f"packet {number} arrived again")
        if number > self.expected:
            self._fail(
                ErrorCode.PACKET_OUT_OF_ORDER,
                f"packet {number} arrived before packet {self.expected}",
            )
        (chunk,) = packet.args
        assert isinstance(chunk, bytes)
        self._size += len(chunk)
        if self._size > self.max_payload:
            self._fail(ErrorCode.FRAME_TOO_LARGE, f"transfer exceeds {self.max_payload} bytes")
        self._chunks.append(chunk)
        if number < maximum:
            return None
        payload = b"".join(self._chunks)
        self.reset()
        return payload

    def finish_value(self, packet: Message) -> tuple[bool, Value | None]:
        """Like ``feed`` but decodes the finished payload: (done, value)."""
        payload = self.feed(packet)
        if payload is None:
            return False, None
        return True, decode_payload(payload)

    def abandon(self) -> None:
        """The transfer ended early (dataFail, closed link): anything held is missing."""
        if self.in_progress:
            missing = (self._max or 0) - len(self._chunks)
            self.reset()
            raise ProtocolError(
                ErrorCode.PACKET_MISSING, f"transfer ended with {missing} packets missing"
            )

    def reset(self) -> None:
        self._chunks = []
        self._size = 0
        self._max = None

    def _fail(self, code: ErrorCode, reason: str) -> None:
        self.reset()
        raise ProtocolError(code, reason)
