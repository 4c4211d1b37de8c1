"""The data transfer mechanism: payloads cut into DATA packets 1..max and put back.

Packets must arrive numbered 1..max in order with the same max; anything else is
an error with its own code, never silently wrong data.
"""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from papertrader.protocol import (
    DEFAULT_MAX_DATA_SIZE,
    HEADER_SIZE,
    NEED_DATA,
    Connection,
    ErrorCode,
    Instruction,
    LocalProtocolError,
    Message,
    ProtocolError,
    Reassembler,
    Role,
    State,
    decode_all,
    decode_payload,
    encode_message,
    encode_payload,
    max_chunk_size,
    packets_for,
    split_payload,
)
from papertrader.protocol.records import from_record, from_records, to_record
from papertrader.protocol.transfer import CHUNK_OVERHEAD

SID = uuid.UUID("5e55104d-0000-4000-8000-00000000a11c")
WORKER = uuid.UUID("c0ffee00-1234-4567-89ab-cdef00000001")
CHUNK = max_chunk_size()


def _payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def _through_the_wire(packets: list[Message], max_data_size: int = DEFAULT_MAX_DATA_SIZE) -> bytes:
    """Encode every packet, decode the stream, reassemble: the payload that arrives."""
    stream = b"".join(encode_message(packet, max_data_size) for packet in packets)
    received = decode_all(stream, max_data_size)
    assert received == packets
    reassembler = Reassembler()
    results = [reassembler.feed(packet) for packet in received]
    assert all(result is None for result in results[:-1]), "only the last packet completes"
    assert not reassembler.in_progress
    result = results[-1]
    assert result is not None
    return result


def test_chunk_size_fills_a_frame_exactly() -> None:
    assert CHUNK == DEFAULT_MAX_DATA_SIZE - CHUNK_OVERHEAD == DEFAULT_MAX_DATA_SIZE - 5
    (packet,) = split_payload(bytes(CHUNK))
    assert len(encode_message(packet)) == HEADER_SIZE + DEFAULT_MAX_DATA_SIZE
    too_big = Message(Instruction.DATA, (bytes(CHUNK + 1),), packet_number=1, packet_max=1)
    with pytest.raises(LocalProtocolError) as info:
        encode_message(too_big)
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE


@pytest.mark.parametrize(
    "size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK + 7, 1_000_003]
)
def test_split_and_reassemble_default_chunk(size: int) -> None:
    payload = _payload(size, size)
    packets = split_payload(payload, request_id=9, session_id=SID, worker_uuid=WORKER)
    expected_count = max(1, -(-size // CHUNK))
    assert len(packets) == expected_count
    assert [p.packet_number for p in packets] == list(range(1, expected_count + 1))
    assert {p.packet_max for p in packets} == {expected_count}
    assert all(len(p.args[0]) <= CHUNK for p in packets)  # type: ignore[arg-type]
    assert all((p.request_id, p.session_id, p.worker_uuid) == (9, SID, WORKER) for p in packets)
    assert _through_the_wire(packets) == payload


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 32, 33, 163])
def test_split_and_reassemble_small_chunk(size: int) -> None:
    payload = _payload(size, size)
    packets = split_payload(payload, 16)
    assert len(packets) == max(1, -(-size // 16))
    assert _through_the_wire(packets, max_data_size=16 + CHUNK_OVERHEAD) == payload


def test_empty_payload_is_one_empty_packet() -> None:
    (packet,) = split_payload(b"")
    assert (packet.packet_number, packet.packet_max, packet.args) == (1, 1, (b"",))


@given(st.binary(max_size=2000), st.integers(1, 300))
def test_split_reassemble_property(payload: bytes, chunk: int) -> None:
    packets = split_payload(payload, chunk)
    assert b"".join(p.args[0] for p in packets) == payload  # type: ignore[misc]
    assert _through_the_wire(packets, max_data_size=chunk + CHUNK_OVERHEAD) == payload


def test_chunk_size_must_be_positive() -> None:
    with pytest.raises(LocalProtocolError):
        split_payload(b"abc", 0)


def _quotes(count: int) -> tuple[object, ...]:
    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    return to_record(
        {
            "quotes": [
                {"symbol": f"SYM{i:04}", "price": Decimal(f"{i}.{i % 100:02}"),
                 "at": start + timedelta(minutes=i), "volume": i * 1000, "note": None}
                for i in range(count)
            ]
        }
    )  # fmt: skip


def test_150_packet_transfer_arrives_byte_exact() -> None:
    value = _quotes(400)
    payload = encode_payload(value)  # type: ignore[arg-type]
    chunk = -(-len(payload) // 150)
    packets = packets_for(value, chunk, request_id=12, session_id=SID)  # type: ignore[arg-type]
    assert len(packets) == 150
    max_data_size = chunk + CHUNK_OVERHEAD

    client, server = Connection(Role.CLIENT, max_data_size), Connection(Role.SERVER, max_data_size)
    for sender, receiver, message in (
        (client, server, Message(Instruction.SWITCH_STATE, (1,), session_id=SID)),
        (server, client, Message(Instruction.STATE_SWITCH_SUCCESS, (1,))),
        (client, server, Message(Instruction.GET_ASSET_VALUE_ALL_TIME, ("*",), session_id=SID)),
    ):
        receiver.receive_data(sender.send(message))
        assert receiver.next_message() == message
    stream = b"".join(server.send(packet) for packet in packets)
    assert server.state is State.COMMAND

    reassembler = Reassembler()
    rng = random.Random(150)
    pos, result, seen = 0, None, 0
    while pos < len(stream):  # arbitrary TCP segment sizes
        size = rng.randint(1, 3 * (HEADER_SIZE + max_data_size))
        client.receive_data(stream[pos : pos + size])
        pos += size
        while (incoming := client.next_message()) is not NEED_DATA:
            assert isinstance(incoming, Message)
            seen += 1
            assert incoming.packet_number == seen
            assert client.state is (State.COMMAND if seen == 150 else State.TRANSFERRING)
            done = reassembler.feed(incoming)
            if done is not None:
                result = done
    assert seen == 150
    assert result == payload
    decoded = decode_payload(result)
    assert decoded == value
    quotes = from_records(from_record(decoded)["quotes"])
    assert quotes[7]["price"] == Decimal("7.07") and quotes[7]["note"] is None


# --- numbering errors ------------------------------------------------------------------


def _packets(count: int = 4) -> list[Message]:
    return split_payload(b"0123456789abcdef"[: count * 4], 4)


def _feed(reassembler: Reassembler, packets: list[Message]) -> None:
    for packet in packets:
        reassembler.feed(packet)


@pytest.mark.parametrize(
    ("order", "code"),
    [
        ([1, 3], ErrorCode.PACKET_OUT_OF_ORDER),
        ([2], ErrorCode.PACKET_OUT_OF_ORDER),
        ([1, 2, 4], ErrorCode.PACKET_OUT_OF_ORDER),
        ([1, 1], ErrorCode.PACKET_DUPLICATE),
        ([1, 2, 2], ErrorCode.PACKET_DUPLICATE),
        ([1, 2, 3, 1], ErrorCode.PACKET_DUPLICATE),
    ],
)
def test_out_of_order_and_duplicate(order: list[int], code: ErrorCode) -> None:
    packets = _packets()
    reassembler = Reassembler()
    with pytest.raises(ProtocolError) as info:
        _feed(reassembler, [packets[n - 1] for n in order])
    assert info.value.code is code
    assert not reassembler.in_progress, "an error drops the transfer"
    assert [reassembler.feed(p) for p in packets][-1] == b"0123456789abcdef", "a new transfer works"


def test_missing_packets_found_on_abandon() -> None:
    packets = _packets()
    reassembler = Reassembler()
    reassembler.abandon()  # nothing in progress: nothing missing
    _feed(reassembler, packets[:2])
    assert reassembler.in_progress and reassembler.expected == 3
    with pytest.raises(ProtocolError) as info:
        reassembler.abandon()
    assert info.value.code is ErrorCode.PACKET_MISSING
    assert "2 packets missing" in info.value.reason
    assert not reassembler.in_progress


def test_a_non_data_message_in_a_transfer_is_missing_data() -> None:
    reassembler = Reassembler()
    reassembler.feed(_packets()[0])
    with pytest.raises(ProtocolError) as info:
        reassembler.feed(Message(Instruction.DATA_FAIL, (113, "gone")))
    assert info.value.code is ErrorCode.PACKET_MISSING


def test_packet_max_changed() -> None:
    first, second = _packets(3)[0], _packets(4)[1]
    assert (first.packet_max, second.packet_max) == (3, 4)
    reassembler = Reassembler()
    reassembler.feed(first)
    with pytest.raises(ProtocolError) as info:
        reassembler.feed(second)
    assert info.value.code is ErrorCode.PACKET_MAX_CHANGED
    assert not reassembler.in_progress


def test_each_numbering_error_has_its_own_code() -> None:
    codes = {
        ErrorCode.PACKET_OUT_OF_ORDER,
        ErrorCode.PACKET_DUPLICATE,
        ErrorCode.PACKET_MISSING,
        ErrorCode.PACKET_MAX_CHANGED,
        ErrorCode.BAD_PACKET_NUMBER,
    }
    assert len({int(code) for code in codes}) == 5


def test_transfer_size_is_bounded() -> None:
    reassembler = Reassembler(max_payload=10)
    packets = split_payload(bytes(12), 4)
    reassembler.feed(packets[0])
    reassembler.feed(packets[1])
    with pytest.raises(ProtocolError) as info:
        reassembler.feed(packets[2])
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE
    assert not reassembler.in_progress


def test_finish_value() -> None:
    value = (("symbol", "BRK.B"), ("price", Decimal("0.10")))
    packets = packets_for(value, 8)
    reassembler = Reassembler()
    results = [reassembler.finish_value(packet) for packet in packets]
    assert results[:-1] == [(False, None)] * (len(packets) - 1)
    done, decoded = results[-1]
    assert done and decoded == value
    assert str(from_record(decoded)["price"]) == "0.10"
