"""Properties of the codec, checked with hypothesis.

* decode(encode(m)) == m for every instruction, arguments drawn from its schema,
  header fields drawn at random;
* a stream split anywhere decodes to the same messages;
* random and mutated bytes only ever raise ProtocolError, and the decoder never
  holds more than one frame;
* money: Decimal is exact, floats and non-finite decimals are refused.
"""

from __future__ import annotations

import ipaddress
import struct
import uuid
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from papertrader.protocol import (
    NEED_DATA,
    SCHEMAS,
    Connection,
    ErrorCode,
    FrameDecoder,
    Instruction,
    LocalProtocolError,
    Message,
    ProtocolError,
    Role,
    State,
    Value,
    ValueType,
    decode_all,
    decode_payload,
    encode_message,
    encode_payload,
)
from papertrader.protocol.header import HEADER, HEADER_SIZE
from papertrader.protocol.values import MAX_LIST_DEPTH, decimal_text, decode_values

UTC = timezone.utc
I64 = st.integers(-(2**63), 2**63 - 1)
U32 = st.integers(0, 2**32 - 1)

# --- strategies ------------------------------------------------------------------------

ids = st.integers(0, 2**128 - 1).map(lambda n: uuid.UUID(int=n))
fixed_offsets = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
# Any aware datetime whose UTC instant is in years 1..9999 (what the decoder can return).
timestamps = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.just(UTC) | fixed_offsets,
)


def _fits(value: Decimal) -> bool:
    try:
        decimal_text(value)
    except ProtocolError:
        return False
    return True


decimals = st.one_of(
    st.builds(
        lambda digits, exponent: Decimal(digits).scaleb(exponent),
        st.integers(-(10**30), 10**30),
        st.integers(-20, 12),
    ),
    st.sampled_from([Decimal("0.10"), Decimal("-0.00"), Decimal("1E+5"), Decimal("-7.000001")]),
    st.decimals(allow_nan=False, allow_infinity=False, places=4).filter(_fits),
)

# IPv6 "::" is "no address" and "::ffff:a.b.c.d" is how IPv4 travels, so both come
# back in their canonical form (None, IPv4Address): see test_address_normal_forms.
addresses = st.one_of(
    st.none(),
    st.ip_addresses(v=4),
    st.integers(1, 2**128 - 1).map(ipaddress.IPv6Address).filter(lambda a: a.ipv4_mapped is None),
    st.sampled_from(["::1", "2001:db8::7", "fe80::1", "64:ff9b::1"]).map(ipaddress.IPv6Address),
)

scalars: dict[ValueType, st.SearchStrategy[Any]] = {
    ValueType.STR: st.text(max_size=40),
    ValueType.INT: I64,
    ValueType.DECIMAL: decimals,
    ValueType.BOOL: st.booleans(),
    ValueType.ID: ids,
    ValueType.DATE: st.dates(),
    ValueType.TIMESTAMP: timestamps,
    ValueType.BYTES: st.binary(max_size=64),
}


def depth(value: Value) -> int:
    if isinstance(value, tuple):
        return 1 + max((depth(item) for item in value), default=0)
    return 0


any_value: st.SearchStrategy[Value] = st.recursive(
    st.one_of(list(scalars.values())),
    lambda children: st.lists(children, max_size=4).map(tuple),
    max_leaves=16,
).filter(lambda v: depth(v) <= MAX_LIST_DEPTH)

VALUES: dict[ValueType, st.SearchStrategy[Any]] = {
    **scalars,
    ValueType.LIST: st.lists(any_value, max_size=4).map(tuple),
}


@st.composite
def messages(draw: st.DrawFn, instruction: Instruction | None = None) -> Message:
    chosen = instruction if instruction is not None else draw(st.sampled_from(list(Instruction)))
    args = tuple(draw(VALUES[kind]) for _, kind in SCHEMAS[chosen].args)
    number = maximum = 0
    if chosen is Instruction.DATA:
        maximum = draw(st.integers(1, 2**32 - 1))
        number = draw(st.integers(1, maximum))
    return Message(
        chosen,
        args,
        session_id=draw(ids),
        worker_uuid=draw(ids),
        client_address=draw(addresses),
        timestamp=draw(I64),
        request_id=draw(U32),
        packet_number=number,
        packet_max=maximum,
    )


# --- round trips -----------------------------------------------------------------------


@pytest.mark.parametrize("instruction", list(Instruction), ids=lambda i: i.name)
@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_round_trip_every_instruction(instruction: Instruction, data: st.DataObject) -> None:
    message = data.draw(messages(instruction))
    frame = encode_message(message)
    assert len(frame) == HEADER_SIZE + struct.unpack_from("<I", frame, 20)[0]
    assert decode_all(frame) == [message]


@given(st.lists(messages(), min_size=1, max_size=6), st.data())
def test_any_split_of_a_stream_decodes_the_same(batch: list[Message], data: st.DataObject) -> None:
    stream = b"".join(encode_message(message) for message in batch)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    decoder = FrameDecoder()
    received: list[Message] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        decoder.receive_data(stream[start:end])
        while (message := decoder.next_message()) is not NEED_DATA:
            assert isinstance(message, Message)
            received.append(message)
    assert received == batch
    assert decoder.buffered == 0
    assert not decoder.mid_frame


def test_stream_fed_one_byte_at_a_time() -> None:
    batch = [
        Message(Instruction.LOGIN, ("bob", "pw", False), request_id=9),
        Message(Instruction.LOGOUT_SUCCESS),
        Message(Instruction.DATA, (b"\x00" * 10,), packet_number=1, packet_max=1),
    ]
    stream = b"".join(encode_message(message) for message in batch)
    decoder = FrameDecoder()
    received = []
    for index in range(len(stream)):
        decoder.receive_data(stream[index : index + 1])
        message = decoder.next_message()
        if message is not NEED_DATA:
            received.append(message)
            assert decoder.next_message() is NEED_DATA
    assert received == batch


@given(any_value)
def test_payload_round_trip(value: Value) -> None:
    assert decode_payload(encode_payload(value)) == value


def test_address_normal_forms() -> None:
    """IPv4-mapped IPv6 comes back as IPv4, and "::" as no address at all."""
    mapped = ipaddress.IPv6Address("::ffff:198.51.100.1")
    for sent, received in (
        (mapped, ipaddress.IPv4Address("198.51.100.1")),
        (ipaddress.IPv6Address("::"), None),
        (ipaddress.IPv4Address("0.0.0.0"), ipaddress.IPv4Address("0.0.0.0")),
        (ipaddress.IPv6Address("2001:db8::1"), ipaddress.IPv6Address("2001:db8::1")),
    ):
        (message,) = decode_all(
            encode_message(Message(Instruction.LOGOUT_SUCCESS, client_address=sent))
        )
        assert message.client_address == received


def test_list_depth_limit() -> None:
    value: Value = ()
    for _ in range(MAX_LIST_DEPTH - 1):
        value = (value,)
    assert depth(value) == MAX_LIST_DEPTH
    assert decode_payload(encode_payload(value)) == value
    with pytest.raises(ProtocolError) as info:
        encode_payload((value,))
    assert info.value.code is ErrorCode.BAD_ARGUMENT
    deep = b"".join(b"\x09\x01\x00\x00\x00" for _ in range(MAX_LIST_DEPTH + 1)) + b"\x04\x00"
    with pytest.raises(ProtocolError) as info:
        decode_payload(deep)
    assert info.value.code is ErrorCode.BAD_ARGUMENT


# --- money -----------------------------------------------------------------------------


def _fill(price: Any) -> Message:
    stamp = datetime(2025, 1, 1, tzinfo=UTC)
    return Message(Instruction.PURCHASE_SUCCESS, (uuid.uuid4(), "AAPL", 3, price, stamp))


@pytest.mark.parametrize(
    "text", ["0.10", "0.1", "189.25", "-3.000", "0", "0.00", "12345678901234567890.123456789"]
)
def test_decimal_round_trip_is_exact(text: str) -> None:
    (message,) = decode_all(encode_message(_fill(Decimal(text))))
    price = message.arg("price")
    assert isinstance(price, Decimal)
    assert price == Decimal(text)
    assert str(price) == text  # the same digits, trailing zeros included: "0.10" stays "0.10"


@given(decimals)
def test_decimal_property(value: Decimal) -> None:
    (message,) = decode_all(encode_message(_fill(value)))
    assert message.arg("price") == value


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_floats_are_refused(value: float) -> None:
    for build in (_fill, lambda v: Message(Instruction.SWITCH_STATE, (v,))):
        with pytest.raises(LocalProtocolError) as info:
            encode_message(build(value))
        assert info.value.code is ErrorCode.BAD_ARGUMENT


@pytest.mark.parametrize("text", ["NaN", "sNaN", "-NaN", "Infinity", "-Infinity"])
def test_non_finite_decimals_are_refused(text: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        encode_message(_fill(Decimal(text)))
    assert info.value.code is ErrorCode.BAD_ARGUMENT


@pytest.mark.parametrize(
    "text", [b"NaN", b"Infinity", b"1e5", b"1E+5", b"+1", b".5", b"5.", b" 1", b"1,5", b""]
)
def test_decoder_refuses_non_plain_decimal_text(text: bytes) -> None:
    raw = b"\x03" + struct.pack("<H", len(text)) + text
    with pytest.raises(ProtocolError) as info:
        decode_values(raw, 1)
    assert info.value.code is ErrorCode.BAD_ARGUMENT


def test_decimal_text_length_limit() -> None:
    with pytest.raises(LocalProtocolError):
        encode_message(_fill(Decimal("1" * 65)))
    with pytest.raises(ProtocolError):
        decode_values(b"\x03" + struct.pack("<H", 65) + b"1" * 65, 1)


def test_encoder_refuses_what_the_decoder_would_refuse() -> None:
    bad: list[Callable[[], Message]] = [
        lambda: Message(Instruction.LOGIN, ("a", "b")),  # too few arguments
        lambda: Message(Instruction.LOGIN, ("a", "b", 1)),  # INT where BOOL is due
        lambda: Message(Instruction.SWITCH_STATE, (True,)),  # BOOL where INT is due
        lambda: Message(Instruction.SWITCH_STATE, (2**63,)),  # not an i64
        lambda: Message(Instruction.LOGOUT_SUCCESS, request_id=2**32),  # not a u32
        lambda: Message(Instruction.LOGOUT_SUCCESS, request_id=-1),
        lambda: Message(Instruction.LOGOUT_SUCCESS, timestamp=2**63),  # not an i64
        lambda: Message(Instruction.LOGOUT_SUCCESS, packet_number=1, packet_max=1),
        lambda: Message(Instruction.DATA, (b"",), packet_number=0, packet_max=0),
        lambda: Message(Instruction.DATA, (b"",), packet_number=3, packet_max=2),
        lambda: Message(Instruction.DATA, (b"",), packet_number=1, packet_max=2**32),
        lambda: Message(Instruction.REGISTER_SUCCESS, ("\ud800",)),  # lone surrogate
        lambda: Message(  # naive datetime
            Instruction.SESSION_ID, (uuid.uuid4(), datetime(2025, 1, 1), "a")
        ),
        lambda: Message(  # UTC instant in year 10000: the decoder could not build it
            Instruction.SESSION_ID,
            (uuid.uuid4(), datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))), "a"),
        ),
        lambda: Message(
            Instruction.GET_ASSET_VALUE_DAY, ("AAPL", datetime(2025, 1, 1, tzinfo=UTC))
        ),
    ]
    for build in bad:
        with pytest.raises(LocalProtocolError):
            encode_message(build())


def test_frame_too_large_is_refused_by_the_encoder() -> None:
    with pytest.raises(LocalProtocolError) as info:
        encode_message(Message(Instruction.REGISTER_SUCCESS, ("x" * 100,)), max_data_size=100)
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE
    assert encode_message(Message(Instruction.REGISTER_SUCCESS, ("x" * 95,)), max_data_size=100)


def test_dates_and_timestamps_at_the_edges() -> None:
    for day in (date.min, date.max, date(2024, 2, 29)):
        assert decode_payload(encode_payload(day)) == day
    for moment in (datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)):
        assert decode_payload(encode_payload(moment)) == moment
    for raw in (b"\x06" + struct.pack("<HBB", 2023, 2, 29), b"\x06" + struct.pack("<HBB", 0, 1, 1)):
        with pytest.raises(ProtocolError):
            decode_payload(raw)
    for micros in (-(2**63), 2**63 - 1):
        with pytest.raises(ProtocolError) as info:
            decode_payload(b"\x07" + struct.pack("<q", micros))
        assert info.value.code is ErrorCode.BAD_ARGUMENT


# --- hostile bytes ---------------------------------------------------------------------

SMALL_MAX = 512  # a small limit, so FRAME_TOO_LARGE is common in the fuzzing below


def feed_and_drain(decoder: FrameDecoder, data: bytes, sizes: list[int]) -> list[ProtocolError]:
    """Feed ``data`` in chunks of ``sizes`` (cycled); after each, drain to NEED_DATA.

    Checks the two promises: only ProtocolError comes out, and no more than one
    frame is ever held.
    """
    errors: list[ProtocolError] = []
    pos, index = 0, 0
    while pos < len(data):
        size = min(sizes[index % len(sizes)], decoder.max_frame_size)
        index += 1
        decoder.receive_data(data[pos : pos + size])
        pos += size
        while True:
            try:
                message = decoder.next_message()
            except ProtocolError as exc:
                assert not isinstance(exc, LocalProtocolError)
                event(exc.code.name)
                errors.append(exc)
                if exc.fatal:
                    with pytest.raises(ProtocolError) as again:
                        decoder.next_message()
                    assert again.value is exc
                    assert decoder.buffered == 0
                    return errors
                continue
            if message is NEED_DATA:
                break
            assert isinstance(message, Message)
            event("message")
        assert decoder.buffered <= decoder.max_frame_size
    return errors


chunk_sizes = st.lists(st.integers(1, HEADER_SIZE + SMALL_MAX), min_size=1, max_size=8)


@given(
    st.sampled_from([b"", b"P", b"PT", b"PT\x01", b"PT\x02"]), st.binary(max_size=3000), chunk_sizes
)
def test_random_bytes_only_raise_protocol_error(
    prefix: bytes, data: bytes, sizes: list[int]
) -> None:
    feed_and_drain(FrameDecoder(SMALL_MAX), prefix + data, sizes)


@st.composite
def plausible_headers(draw: st.DrawFn) -> bytes:
    """Good magic and version, the rest random but often close to valid."""
    instruction = draw(st.sampled_from(list(Instruction)) | st.integers(0, 0xFFFF))
    mtype = draw(st.just(int(instruction) >> 8) | st.integers(0, 255))
    argc = draw(st.integers(0, 7) | st.integers(0, 0xFFFF))
    number, maximum = draw(
        st.sampled_from([(0, 0), (1, 1), (1, 2), (2, 1), (0, 1)]) | st.tuples(U32, U32)
    )
    size = draw(st.integers(0, SMALL_MAX + 10) | U32)
    rest = draw(st.binary(min_size=56, max_size=56))
    return HEADER.pack(b"PT", 1, mtype, int(instruction), argc, draw(U32), number, maximum, size, 0,
                       rest[:16], rest[16:32], rest[32:48]) + rest[48:]  # fmt: skip


@given(st.lists(plausible_headers().flatmap(lambda h: st.binary(max_size=600).map(lambda b: h + b)),
                min_size=1, max_size=5), chunk_sizes)  # fmt: skip
def test_plausible_garbage_only_raises_protocol_error(
    frames: list[bytes], sizes: list[int]
) -> None:
    feed_and_drain(FrameDecoder(SMALL_MAX), b"".join(frames), sizes)


def _small_messages() -> st.SearchStrategy[Message]:
    return messages().filter(lambda m: len(encode_message(m)) <= HEADER_SIZE + SMALL_MAX)


mutations = st.lists(
    st.tuples(
        st.sampled_from(["flip", "truncate", "insert", "delete"]),
        st.integers(0, 10**6),
        st.integers(0, 255),
        st.binary(min_size=1, max_size=40),
    ),  # fmt: skip
    min_size=1,
    max_size=4,
)


def mutate(data: bytes, steps: list[tuple[str, int, int, bytes]]) -> bytes:
    buffer = bytearray(data)
    for kind, where, bit, extra in steps:
        if not buffer:
            buffer += extra
            continue
        at = where % len(buffer)
        if kind == "flip":
            buffer[at] ^= 1 << (bit % 8)
        elif kind == "truncate":
            del buffer[at:]
        elif kind == "insert":
            buffer[at:at] = extra
        else:
            del buffer[at : at + 1 + bit % 16]
    return bytes(buffer)


@settings(suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(st.lists(_small_messages(), min_size=1, max_size=4), mutations, chunk_sizes)
def test_mutated_frames_only_raise_protocol_error(
    batch: list[Message], steps: list[tuple[str, int, int, bytes]], sizes: list[int]
) -> None:
    stream = mutate(b"".join(encode_message(m) for m in batch), steps)
    feed_and_drain(FrameDecoder(SMALL_MAX), stream, sizes)


@settings(suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(_small_messages(), mutations)
def test_server_answers_any_broken_frame(
    message: Message, steps: list[tuple[str, int, int, bytes]]
) -> None:
    """Whatever a client sends, a server in the command state can answer it."""
    server = Connection(Role.SERVER, SMALL_MAX)
    server.receive_data(mutate(encode_message(message), steps))
    try:
        server.next_message()
    except ProtocolError as exc:
        assume(server.state is State.COMMAND)
        reply = server.failure_for(exc)
        client = Connection(Role.CLIENT, SMALL_MAX)
        client.receive_data(reply)
        answer = client.next_message()
        assert isinstance(answer, Message)
        assert answer.is_failure
        assert answer.arg("code") == exc.code
        if exc.header is not None:
            assert answer.request_id == exc.header.request_id


def test_subclasses_are_sent_as_their_wire_type_and_bad_strings_refused_each_time() -> None:
    """The encoder picks a value's encoding by its exact class, and places a subclass
    (an IntEnum code, a str subclass) by what it is; it keeps the encodings of the
    strings it sent, but never a refusal."""

    class Name(str):
        pass

    assert encode_payload((ErrorCode.SESSION_MISMATCH, Name("AAPL"), True, 7)) == encode_payload(
        (int(ErrorCode.SESSION_MISMATCH), "AAPL", True, 7)
    )
    for _ in range(2):
        with pytest.raises(ProtocolError) as info:
            encode_payload(("\ud800",))
        assert info.value.code is ErrorCode.BAD_ARGUMENT
    with pytest.raises(ProtocolError):
        encode_payload((1.5,))  # type: ignore[arg-type]
