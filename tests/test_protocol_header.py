"""The header: its layout, and every limit judged on it before the body is read.

Non-fatal problems (the framing is intact) cost the peer one failure return: the
decoder skips that frame's body and decodes the next frame normally. Fatal ones
(bad magic, bad version, a data size over the limit) break the stream for good.
"""

from __future__ import annotations

import ipaddress
import struct
import uuid
from typing import Any

import pytest

from papertrader.protocol import (
    HEADER_SIZE,
    NEED_DATA,
    ErrorCode,
    FrameDecoder,
    Header,
    Instruction,
    Message,
    MessageType,
    ProtocolError,
    decode_all,
    encode_message,
)
from papertrader.protocol.header import HEADER, pack_header, unpack_header
from papertrader.protocol.schemas import MAX_ARGUMENTS

MAX = 1000
NEXT = Message(Instruction.REGISTER_SUCCESS, ("next",), request_id=42)


def raw_header(
    *,
    magic: bytes = b"PT",
    version: int = 1,
    message_type: int = MessageType.COMMAND,
    instruction: int = Instruction.LOGIN,
    argument_count: int = 3,
    request_id: int = 5,
    packet_number: int = 0,
    packet_max: int = 0,
    data_size: int = 0,
) -> bytes:
    return HEADER.pack(
        magic, version, message_type, instruction, argument_count, request_id,
        packet_number, packet_max, data_size, 0, bytes(16), bytes(16), bytes(16),
    )  # fmt: skip


def test_header_layout_byte_by_byte() -> None:
    header = Header(
        message_type=MessageType.RETURN,
        instruction=Instruction.DATA,
        argument_count=1,
        request_id=0x01020304,
        packet_number=0x0A0B0C0D,
        packet_max=0x11121314,
        data_size=0x00000123,
        timestamp=-2,
        session_id=uuid.UUID(int=0x000102030405060708090A0B0C0D0E0F),
        worker_uuid=uuid.UUID(int=0xF0E0D0C0B0A090807060504030201000),
        client_address=ipaddress.IPv4Address("192.0.2.1"),
    )
    raw = pack_header(header)
    assert len(raw) == HEADER_SIZE == 80
    assert raw[0:2] == b"PT"
    assert raw[2] == 1
    assert raw[3] == 4
    assert raw[4:6] == b"\x0b\x04"  # 0x040B little-endian
    assert raw[6:8] == b"\x01\x00"
    assert raw[8:12] == b"\x04\x03\x02\x01"
    assert raw[12:16] == b"\x0d\x0c\x0b\x0a"
    assert raw[16:20] == b"\x14\x13\x12\x11"
    assert raw[20:24] == b"\x23\x01\x00\x00"
    assert raw[24:32] == b"\xfe" + b"\xff" * 7
    assert raw[32:48] == bytes(range(16))  # UUIDs in their usual (big-endian) byte order
    assert raw[48:64] == bytes.fromhex("f0e0d0c0b0a090807060504030201000")
    assert raw[64:80] == bytes(10) + b"\xff\xff" + bytes([192, 0, 2, 1])
    assert unpack_header(raw) == header


def test_instruction_high_byte_is_the_message_type() -> None:
    for instruction in Instruction:
        assert instruction.message_type == instruction.value >> 8


# --- fatal: the framing is lost ------------------------------------------------------------


@pytest.mark.parametrize("data_size", [MAX + 1, 2**31, 2**32 - 1])
def test_oversized_frame_is_refused_after_the_header_alone(data_size: int) -> None:
    decoder = FrameDecoder(MAX)
    decoder.receive_data(raw_header(data_size=data_size)[:-1])
    assert decoder.next_message() is NEED_DATA
    decoder.receive_data(raw_header(data_size=data_size)[-1:])  # exactly 80 bytes so far
    with pytest.raises(ProtocolError) as info:
        decoder.next_message()
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE
    assert info.value.fatal
    assert info.value.header is not None and info.value.header.data_size == data_size
    assert decoder.buffered == 0
    decoder.receive_data(encode_message(NEXT))  # ignored: the stream is broken for good
    assert decoder.buffered == 0
    for _ in range(3):
        with pytest.raises(ProtocolError) as again:
            decoder.next_message()
        assert again.value is info.value


def test_data_size_equal_to_the_limit_is_accepted() -> None:
    message = Message(Instruction.DATA, (b"x" * (MAX - 5),), packet_number=1, packet_max=1)
    frame = encode_message(message, MAX)
    assert len(frame) == HEADER_SIZE + MAX
    decoder = FrameDecoder(MAX)
    assert decoder.max_frame_size == HEADER_SIZE + MAX
    decoder.receive_data(frame[:HEADER_SIZE])
    assert decoder.next_message() is NEED_DATA  # header accepted, waiting for the body
    assert decoder.mid_frame
    decoder.receive_data(frame[HEADER_SIZE:])
    assert decoder.next_message() == message


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"magic": b"HT"}, ErrorCode.BAD_MAGIC),
        ({"magic": b"\x00\x00"}, ErrorCode.BAD_MAGIC),
        ({"version": 0}, ErrorCode.BAD_VERSION),
        ({"version": 2}, ErrorCode.BAD_VERSION),
    ],
)
def test_bad_magic_or_version_is_fatal_for_good(
    fields: dict[str, bytes | int], code: ErrorCode
) -> None:
    decoder = FrameDecoder(MAX)
    decoder.receive_data(raw_header(**fields) + encode_message(NEXT))  # type: ignore[arg-type]
    with pytest.raises(ProtocolError) as info:
        decoder.next_message()
    assert info.value.code is code
    assert info.value.fatal
    decoder.receive_data(encode_message(NEXT))
    for _ in range(3):
        with pytest.raises(ProtocolError) as again:
            decoder.next_message()
        assert again.value is info.value
    assert decoder.buffered == 0


# --- non-fatal: skip the frame, go on ----------------------------------------------------

DATA: dict[str, Any] = {
    "message_type": MessageType.RETURN,
    "instruction": Instruction.DATA,
    "argument_count": 1,
}
NON_FATAL: list[tuple[str, dict[str, Any], ErrorCode]] = [
    ("unknown message type", {"message_type": 9}, ErrorCode.UNKNOWN_MESSAGE_TYPE),
    ("message type 0", {"message_type": 0}, ErrorCode.UNKNOWN_MESSAGE_TYPE),
    ("unknown instruction", {"instruction": 0x01FF}, ErrorCode.UNKNOWN_INSTRUCTION),
    ("unknown category", {"message_type": 1, "instruction": 0x0901}, ErrorCode.UNKNOWN_INSTRUCTION),
    ("type mismatch", {"message_type": MessageType.DATA_TRANSFER}, ErrorCode.TYPE_MISMATCH),
    ("return sent as command", {"instruction": Instruction.LOGIN_FAIL, "argument_count": 2},
     ErrorCode.TYPE_MISMATCH),
    ("too many arguments", {"argument_count": MAX_ARGUMENTS + 1}, ErrorCode.TOO_MANY_ARGUMENTS),
    ("65535 arguments", {"argument_count": 0xFFFF}, ErrorCode.TOO_MANY_ARGUMENTS),
    ("too few arguments", {"argument_count": 2}, ErrorCode.ARGUMENT_COUNT),
    ("one too many for LOGIN", {"argument_count": 4}, ErrorCode.ARGUMENT_COUNT),
    ("packet fields on a command", {"packet_number": 1, "packet_max": 1},
     ErrorCode.BAD_PACKET_NUMBER),
    ("data packet 0", DATA, ErrorCode.BAD_PACKET_NUMBER),
    ("data packet past max", {**DATA, "packet_number": 3, "packet_max": 2},
     ErrorCode.BAD_PACKET_NUMBER),
]  # fmt: skip

# A body that looks like a frame of its own: it must be skipped, not parsed.
DECOY_BODY = encode_message(Message(Instruction.LOGOUT_SUCCESS, request_id=666)) + b"\xff" * 9


@pytest.mark.parametrize(
    ("fields", "code"), [c[1:] for c in NON_FATAL], ids=[c[0] for c in NON_FATAL]
)
def test_bad_header_skips_its_body(fields: dict[str, Any], code: ErrorCode) -> None:
    bad = raw_header(data_size=len(DECOY_BODY), **fields) + DECOY_BODY
    decoder = FrameDecoder(MAX)
    decoder.receive_data(bad + encode_message(NEXT))
    with pytest.raises(ProtocolError) as info:
        decoder.next_message()
    assert info.value.code is code
    assert not info.value.fatal
    assert info.value.header is not None and info.value.header.request_id == 5
    assert decoder.next_message() == NEXT
    assert decoder.next_message() is NEED_DATA
    assert decoder.buffered == 0


@pytest.mark.parametrize(
    ("fields", "code"), [c[1:] for c in NON_FATAL], ids=[c[0] for c in NON_FATAL]
)
def test_bad_header_is_judged_before_the_body_arrives(
    fields: dict[str, Any], code: ErrorCode
) -> None:
    """The error comes with the 80th byte; the body is then dropped as it trickles in."""
    stream = raw_header(data_size=len(DECOY_BODY), **fields) + DECOY_BODY + encode_message(NEXT)
    decoder = FrameDecoder(MAX)
    results: list[object] = []
    for index in range(len(stream)):
        decoder.receive_data(stream[index : index + 1])
        try:
            result = decoder.next_message()
        except ProtocolError as exc:
            assert index == HEADER_SIZE - 1
            assert exc.code is code
            continue
        if result is not NEED_DATA:
            results.append(result)
        assert decoder.buffered < HEADER_SIZE
    assert results == [NEXT]


@pytest.mark.parametrize(
    ("instruction", "argument_count", "data", "code"),
    [
        (Instruction.LOGOUT_SUCCESS, 0, b"\x04\x01", ErrorCode.TRAILING_DATA),
        (Instruction.REGISTER_SUCCESS, 1, b"\x01\x03\x00\x00\x00bobX", ErrorCode.TRAILING_DATA),
        (
            Instruction.REGISTER_SUCCESS,
            1,
            b"\x02" + bytes(8),
            ErrorCode.BAD_ARGUMENT,
        ),  # INT, not STR
        (
            Instruction.REGISTER_SUCCESS,
            1,
            b"\x01\x09\x00\x00\x00bob",
            ErrorCode.BAD_ARGUMENT,
        ),  # short
        (Instruction.REGISTER_SUCCESS, 1, b"\x01\x02\x00\x00\x00\xc3\x28", ErrorCode.BAD_ARGUMENT),
        (Instruction.REGISTER_SUCCESS, 1, b"\x63", ErrorCode.BAD_ARGUMENT),  # unknown tag
        (Instruction.REGISTER_SUCCESS, 1, b"", ErrorCode.BAD_ARGUMENT),
        (Instruction.STATE_SWITCH_SUCCESS, 1, b"\x04\x02", ErrorCode.BAD_ARGUMENT),  # bool 2
        (Instruction.STATE_SWITCH_SUCCESS, 1, b"\x09\xff\xff\xff\xff", ErrorCode.BAD_ARGUMENT),
    ],
)
def test_bad_body_is_non_fatal(
    instruction: Instruction, argument_count: int, data: bytes, code: ErrorCode
) -> None:
    frame = raw_header(
        message_type=MessageType.RETURN, instruction=instruction,
        argument_count=argument_count, data_size=len(data),
    ) + data  # fmt: skip
    decoder = FrameDecoder(MAX)
    decoder.receive_data(frame + encode_message(NEXT))
    with pytest.raises(ProtocolError) as info:
        decoder.next_message()
    assert info.value.code is code
    assert not info.value.fatal
    assert info.value.header is not None and info.value.header.instruction == instruction
    assert decoder.next_message() == NEXT


def test_several_bad_frames_in_a_row() -> None:
    stream = b"".join(
        raw_header(data_size=3, **fields) + b"abc"
        for _, fields, _ in NON_FATAL
    ) + encode_message(NEXT)  # fmt: skip
    decoder = FrameDecoder(MAX)
    decoder.receive_data(stream)
    codes = []
    for _ in NON_FATAL:
        with pytest.raises(ProtocolError) as info:
            decoder.next_message()
        codes.append(info.value.code)
    assert codes == [code for _, _, code in NON_FATAL]
    assert decoder.next_message() == NEXT


def test_decode_all_refuses_an_unfinished_frame() -> None:
    frame = encode_message(NEXT)
    assert decode_all(frame) == [NEXT]
    with pytest.raises(ProtocolError) as info:
        decode_all(frame + frame[:10])
    assert info.value.code is ErrorCode.TRAILING_DATA


def test_header_fields_survive_unchanged() -> None:
    raw = raw_header(request_id=2**32 - 1, data_size=0, instruction=Instruction.LOGIN_SESSION,
                     argument_count=0)  # fmt: skip
    session = uuid.uuid4()
    raw = raw[:32] + session.bytes + raw[48:]
    (message,) = decode_all(raw)
    assert message.request_id == 2**32 - 1
    assert message.session_id == session
    assert message.client_address is None
    assert struct.unpack_from("<q", raw, 24)[0] == message.timestamp == 0
