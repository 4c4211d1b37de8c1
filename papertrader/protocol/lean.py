"""The lean path: the frames that dominate a worker's traffic, without building objects.

A quote costs a client two frames, ``switchState(1)`` and
``getAssetValueCurrent(symbol)``, answered by ``stateSwitchSuccess(1)`` and one
DATA packet. The reference path (``decoder.py``, ``message.py``, ``states.py``)
turns every frame into a ``Header`` and a ``Message``, checks each field
against the schema table and encodes each answer from its values: the
readable definition of what is valid, and most of a worker's time per quote
(bench/README.md has the profile). This module recognises just those two
requests, with one precompiled struct and one dictionary lookup, and answers
with bytes encoded ahead of time in which only the request id changes.
Clients send both frames together (docs/PROTOCOL.md 14.4), so the two are
also taken as one ``QuotePair`` (one unpack for both headers, one session
check, both answers from one template, ``send_pair``); a pair that cannot be
answered so is left to the frame-by-frame path.

It never decides differently from the reference path: a frame that is not
whole, not one of its own, not well-formed down to the last byte, or not
legal in the connection's state is left in the buffer untouched, and the
reference path accepts it or refuses it with its failure return.
``tests/test_protocol_lean.py`` feeds the same bytes through both and
compares the messages, the answers and the states.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import replace
from typing import NamedTuple

from papertrader.protocol.codes import ConnectionStateCode, Instruction
from papertrader.protocol.errors import ErrorCode, LocalProtocolError
from papertrader.protocol.header import HEADER, HEADER_SIZE, MAGIC, VERSION, unpack_header
from papertrader.protocol.message import Message, check_header, decode_body, encode_message
from papertrader.protocol.schemas import SCHEMAS
from papertrader.protocol.states import TRANSITIONS, Connection, Event, Role, State, classify
from papertrader.protocol.values import ValueType

#: The header as the lean path reads it: the 8 bytes from the magic to the argument
#: count (compared whole), the request id, the packet number and max (must be zero),
#: the data size and the session id; timestamp, worker uuid and address are skipped.
LEAN_HEADER = struct.Struct("<8sI8sI8x16s32x")
#: Where the request id sits in every header (patched into pre-encoded answers).
REQUEST_ID = struct.Struct("<I")
REQUEST_ID_OFFSET = 8
_NO_PACKET = bytes(8)
_INT_ARG = struct.Struct("<Bq")  # a lone INT argument: its tag and value
_STR_ARG = struct.Struct("<BI")  # a lone STR argument: its tag and length

assert LEAN_HEADER.size == HEADER_SIZE
assert HEADER.size == HEADER_SIZE


def _prefix(instruction: Instruction) -> bytes:
    """Magic, version, message type, instruction and argument count of a valid frame."""
    count = len(SCHEMAS[instruction].args)
    return struct.pack("<2sBBHH", MAGIC, VERSION, instruction.message_type, instruction, count)


_SWITCH = _prefix(Instruction.SWITCH_STATE)
_QUOTE = _prefix(Instruction.GET_ASSET_VALUE_CURRENT)
assert SCHEMAS[Instruction.SWITCH_STATE].args == (("state", ValueType.INT),)
assert SCHEMAS[Instruction.GET_ASSET_VALUE_CURRENT].args == (("asset", ValueType.STR),)
_SWITCH_EVENTS = {
    int(ConnectionStateCode.DATA_TRANSFER): Event.SWITCH_TO_DATA,
    int(ConnectionStateCode.COMMAND): Event.SWITCH_TO_COMMAND,
}


class LeanRequest(NamedTuple):
    """A request the lean path recognised: what its answer needs, and its bytes."""

    instruction: Instruction
    request_id: int
    session: bytes  # the header's 16 session id bytes
    arg: int | str  # switchState's target state, or the quote's symbol as sent
    frame: bytes

    def message(self) -> Message:
        """The reference path's Message for this frame (for answers not pre-encoded)."""
        header = unpack_header(self.frame[:HEADER_SIZE])
        instruction = check_header(header, len(self.frame))
        return decode_body(header, instruction, self.frame[HEADER_SIZE:])


def parse(buffer: bytearray, max_data_size: int) -> tuple[LeanRequest, Event] | None:
    """The frame at the start of ``buffer`` if it is a whole, valid lean request."""
    if len(buffer) < HEADER_SIZE:
        return None
    prefix, request_id, packet, size, session = LEAN_HEADER.unpack_from(buffer)
    end = HEADER_SIZE + size
    if packet != _NO_PACKET or size > max_data_size or len(buffer) < end:
        return None
    if prefix == _SWITCH:
        if size != _INT_ARG.size:
            return None
        tag, target = _INT_ARG.unpack_from(buffer, HEADER_SIZE)
        event = _SWITCH_EVENTS.get(target)
        if tag != ValueType.INT or event is None:
            return None
        return LeanRequest(
            Instruction.SWITCH_STATE, request_id, session, target, bytes(buffer[:end])
        ), event
    if prefix == _QUOTE:
        if size < _STR_ARG.size:
            return None
        tag, length = _STR_ARG.unpack_from(buffer, HEADER_SIZE)
        if tag != ValueType.STR or length != size - _STR_ARG.size:
            return None
        try:
            symbol = buffer[HEADER_SIZE + _STR_ARG.size : end].decode("utf-8")
        except UnicodeDecodeError:
            return None
        return LeanRequest(
            Instruction.GET_ASSET_VALUE_CURRENT, request_id, session, symbol, bytes(buffer[:end])
        ), Event.DATA_REQUEST
    return None


#: A whole quote as clients send it: switchState(1) (its 80-byte header and its INT
#: argument, 89 bytes) and, right behind it, getAssetValueCurrent's header and the
#: tag and length of its STR argument, read by one unpack.
PAIR = struct.Struct("<8sI8sI8x16s32xBq8sI8sI8x16s32xBI")
_SWITCH_SIZE = HEADER_SIZE + _INT_ARG.size
_SYMBOL_AT = _SWITCH_SIZE + HEADER_SIZE + _STR_ARG.size
_TO_DATA = int(ConnectionStateCode.DATA_TRANSFER)
_INT, _STR = int(ValueType.INT), int(ValueType.STR)
_new = tuple.__new__


class QuotePair(NamedTuple):
    """switchState(1) then getAssetValueCurrent(symbol) under one session, both whole:
    the two frames of a quote, taken together (``LeanConnection.next_pair``)."""

    switch_id: int  # the request ids of the two frames
    quote_id: int
    session: bytes  # the headers' 16 session id bytes (the same in both)
    symbol: str  # as sent
    size: int  # bytes of both frames


def parse_pair(buffer: bytearray, max_data_size: int) -> QuotePair | None:
    """The two frames at the start of ``buffer`` if they are a whole quote pair: exactly
    when ``parse`` would take each of them, the first switching to data transfer, and
    both name the same session. Anything else is None (``parse`` frame by frame)."""
    if len(buffer) < _SYMBOL_AT:
        return None
    (
        prefix, switch_id, packet, size, session, tag, target,
        quote_prefix, quote_id, quote_packet, quote_size, quote_session, str_tag, length,
    ) = PAIR.unpack_from(buffer)  # fmt: skip
    end = _SWITCH_SIZE + HEADER_SIZE + quote_size
    if (
        prefix != _SWITCH
        or quote_prefix != _QUOTE
        or packet != _NO_PACKET
        or quote_packet != _NO_PACKET
        or size != _INT_ARG.size
        or size > max_data_size
        or tag != _INT
        or target != _TO_DATA
        or quote_session != session
        or quote_size > max_data_size
        or str_tag != _STR
        or length != quote_size - _STR_ARG.size
        or len(buffer) < end
    ):
        return None
    try:
        symbol = buffer[_SYMBOL_AT:end].decode("utf-8")
    except UnicodeDecodeError:
        return None
    return _new(QuotePair, (switch_id, quote_id, session, symbol, end))


def _patched(template: bytes, *ids: tuple[tuple[int, ...], int]) -> bytes:
    """``template`` with each request id packed at its offsets (the answers' headers)."""
    data = bytearray(template)
    for offsets, request_id in ids:
        for offset in offsets:
            REQUEST_ID.pack_into(data, offset, request_id)
    return bytes(data)


class Encoded:
    """Answers encoded once and sent many times, with the request id patched in.

    Built from the very Messages the reference path would send (so the bytes
    are the encoder's own), with the state machine events they stand for.
    """

    __slots__ = ("template", "offsets", "events", "_paired")

    def __init__(self, messages: Sequence[Message], max_data_size: int) -> None:
        self._paired: PairedAnswer | None = None
        parts: list[bytes] = []
        offsets: list[int] = []
        at = 0
        for message in messages:
            data = encode_message(replace(message, request_id=0), max_data_size)
            parts.append(data)
            offsets.append(at + REQUEST_ID_OFFSET)
            at += len(data)
        self.template = b"".join(parts)
        self.offsets = tuple(offsets)
        self.events = tuple(classify(message) for message in messages)

    def for_request(self, request_id: int) -> bytes:
        """The answer's bytes carrying ``request_id``."""
        if not request_id:
            return self.template
        return _patched(self.template, (self.offsets, request_id))

    def after(self, switched: Encoded) -> PairedAnswer:
        """``switched`` then this answer, for a quote pair: made once and kept with this
        answer (both are fixed bytes until the quote changes)."""
        paired = self._paired
        if paired is None or paired.switched is not switched:
            paired = self._paired = PairedAnswer(switched, self)
        return paired


class PairedAnswer:
    """A quote pair's two answers as one template, with the state machine's path through
    the pair's four steps worked out once per state it starts in."""

    __slots__ = ("switched", "template", "switch_offsets", "quote_offsets", "events", "_ends")

    def __init__(self, switched: Encoded, answer: Encoded) -> None:
        self.switched = switched
        self.template = switched.template + answer.template
        self.switch_offsets = switched.offsets
        self.quote_offsets = tuple(len(switched.template) + at for at in answer.offsets)
        self.events = (Event.SWITCH_TO_DATA, *switched.events, Event.DATA_REQUEST, *answer.events)
        self._ends: dict[State, State | None] = {}

    def end_state(self, state: State) -> State | None:
        """Where the four steps lead from ``state``; None if one is not legal."""
        try:
            return self._ends[state]
        except KeyError:
            pass
        end: State | None = state
        for event in self.events:
            end = TRANSITIONS.get((end, event))  # type: ignore[arg-type]
        self._ends[state] = end
        return end

    def for_requests(self, switch_id: int, quote_id: int) -> bytes:
        """The pair's bytes: the switch's answer carrying ``switch_id``, the quote's
        ``quote_id``."""
        return _patched(
            self.template, (self.switch_offsets, switch_id), (self.quote_offsets, quote_id)
        )


class LeanConnection(Connection):
    """A server ``Connection`` that also takes the lean path's requests and answers."""

    def next_lean(self) -> LeanRequest | None:
        """The next frame if the lean path takes it, through the state machine already;
        otherwise None, and the frame is left for ``next_message``."""
        buffer = self._decoder.at_frame_start()
        if buffer is None or self.role is not Role.SERVER:
            return None
        found = parse(buffer, self._decoder.max_data_size)
        if found is None:
            return None
        request, event = found
        target = TRANSITIONS.get((self.state, event))
        if target is None:  # WRONG_STATE: the reference path says so
            return None
        self._decoder.discard(len(request.frame))
        self.state = target
        return request

    def next_pair(self) -> QuotePair | None:
        """The next two frames if they are a quote pair (``parse_pair``); nothing is taken
        until ``send_pair`` answers them."""
        buffer = self._decoder.at_frame_start()
        if buffer is None or self.role is not Role.SERVER:
            return None
        return parse_pair(buffer, self._decoder.max_data_size)

    def send_pair(self, pair: QuotePair, switched: Encoded, answer: Encoded) -> bytes | None:
        """Take ``pair`` and give the bytes of both answers (stateSwitchSuccess, then the
        quote's), moving the state machine through all four steps, as ``next_lean`` and
        ``send_encoded`` would frame by frame. None, with nothing taken and the state
        unchanged, if a step is not legal now: the frames then go one by one, and the
        reference path says what is wrong."""
        paired = answer.after(switched)
        state = paired.end_state(self.state)
        if state is None:
            return None
        self._decoder.discard(pair.size)
        self.state = state
        return paired.for_requests(pair.switch_id, pair.quote_id)

    @property
    def drained(self) -> bool:
        """Nothing buffered, at a frame boundary: ``next_message`` would need data."""
        buffer = self._decoder.at_frame_start()
        return buffer is not None and not buffer

    def send_encoded(self, answer: Encoded, request_id: int) -> bytes:
        """Bytes of a pre-encoded answer; LocalProtocolError if it may not be sent now."""
        state: State = self.state
        for event in answer.events:
            target = TRANSITIONS.get((state, event))
            if target is None:
                raise LocalProtocolError(
                    ErrorCode.WRONG_STATE, f"{event.value} is not valid in the {state.value} state"
                )
            state = target
        self.state = state
        return answer.for_request(request_id)
