"""The lean path (protocol/lean.py) against the reference path.

The same bytes go to a reference server ``Connection`` and to a
``LeanConnection`` that tries the lean path first: both must produce the same
messages, refuse the same frames with the same error, and end every step in
the same state, however the bytes are split and however the frames are
mangled. Pre-encoded answers must be the encoder's own bytes and move the
state machine exactly as sending the messages would.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from papertrader.protocol import (
    Connection,
    ErrorCode,
    Instruction,
    LocalProtocolError,
    Message,
    NeedData,
    ProtocolError,
    Role,
    State,
    encode_message,
    failure_reply,
    packets_for,
    reply_to,
)
from papertrader.protocol.decoder import decode_all
from papertrader.protocol.lean import Encoded, LeanConnection

LIMIT = 4096


def frame(instruction: Instruction, *args: object, request_id: int = 0, sid: bytes = b"") -> bytes:
    session = uuid.UUID(bytes=sid) if sid else uuid.UUID(int=7)
    return encode_message(
        Message(instruction, tuple(args), session_id=session, request_id=request_id)  # type: ignore[arg-type]
    )


def mangle(data: bytes, at: int, value: int) -> bytes:
    """``data`` with the byte at ``at`` (modulo its length) replaced."""
    at %= len(data)
    return data[:at] + bytes([value]) + data[at + 1 :]


QUOTE_PACKETS = packets_for(("AAPL", "187.25"), chunk_size=8)  # several packets
ANSWERS: dict[Instruction, Encoded | dict[int, Encoded]] = {
    Instruction.SWITCH_STATE: {
        target: Encoded([Message(Instruction.STATE_SWITCH_SUCCESS, (target,))], LIMIT)
        for target in (0, 1)
    },
    Instruction.GET_ASSET_VALUE_CURRENT: Encoded(QUOTE_PACKETS, LIMIT),
}


def answer(conn: Connection, message: Message) -> bytes:
    """What a server says, through the reference encoder: success for the lean path's
    requests, a failure return for anything else."""
    if message.instruction is Instruction.SWITCH_STATE:
        replies = [reply_to(message, Instruction.STATE_SWITCH_SUCCESS, message.args[0])]
    elif message.instruction is Instruction.GET_ASSET_VALUE_CURRENT:
        replies = [replace(p, request_id=message.request_id) for p in QUOTE_PACKETS]
    else:
        replies = [failure_reply(message.instruction, ErrorCode.INTERNAL, "x", message.request_id)]
    return b"".join(conn.send(reply) for reply in replies)


def run(
    conn: Connection, chunks: list[bytes], lean: bool, pairs: bool = False
) -> list[tuple[object, ...]]:
    """Feed ``chunks``, pull everything out and answer it: what came, what was sent,
    and the state after each (the lean run answers its requests pre-encoded; with
    ``pairs`` it first tries a quote's two frames at once, whose first entry then has
    no state of its own: the pair moves the state machine in one go)."""
    seen: list[tuple[object, ...]] = []
    for chunk in chunks:
        conn.receive_data(chunk)
        while True:
            if pairs:
                assert isinstance(conn, LeanConnection)
                pair = conn.next_pair()
                if pair is not None:
                    frames = bytes(conn._decoder._buffer[: pair.size])
                    switched = ANSWERS[Instruction.SWITCH_STATE][1]  # type: ignore[index]
                    quote = ANSWERS[Instruction.GET_ASSET_VALUE_CURRENT]
                    sent = conn.send_pair(pair, switched, quote)  # type: ignore[arg-type]
                    if sent is not None:
                        switch, quote_request = decode_all(frames, LIMIT)
                        assert (pair.switch_id, pair.quote_id) == (
                            switch.request_id,
                            quote_request.request_id,
                        )
                        cut = len(switched.template)
                        seen.append(("message", switch, sent[:cut], None))
                        seen.append(("message", quote_request, sent[cut:], conn.state))
                        continue
            if lean:
                assert isinstance(conn, LeanConnection)
                request = conn.next_lean()
                if request is not None:
                    encoded = ANSWERS[request.instruction]
                    if isinstance(encoded, dict):
                        encoded = encoded[int(request.arg)]
                    sent = conn.send_encoded(encoded, request.request_id)
                    seen.append(("message", request.message(), sent, conn.state))
                    continue
            try:
                message = conn.next_message()
            except ProtocolError as exc:
                try:
                    sent = conn.failure_for(exc)
                except LocalProtocolError:
                    sent = b""
                seen.append(("error", exc.code, exc.fatal, sent, conn.state))
                if exc.fatal:
                    return seen
                continue
            if isinstance(message, NeedData):
                break
            seen.append(("message", message, answer(conn, message), conn.state))
    return seen


OTHERS = [
    frame(Instruction.LOGOUT),
    frame(Instruction.GET_ASSET_INFO, "AAPL"),
    frame(Instruction.PURCHASE_ASSET, "AAPL", 3),
    frame(Instruction.GET_WORKER_LIST),
]


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    """Mostly what clients send (switchState(1) then a quote), some of it mangled."""
    sent: list[bytes] = []
    for _ in range(draw(st.integers(1, 8))):
        rid = draw(st.integers(0, 2**32 - 1))
        sid = draw(st.binary(min_size=16, max_size=16))
        kind = draw(st.sampled_from(["quote", "quote", "switch", "other"]))
        if kind == "quote":
            symbol = draw(st.sampled_from(["AAPL", "msft ", "BRK.B", ""]) | st.text(max_size=8))
            batch = [
                frame(Instruction.SWITCH_STATE, 1, request_id=rid, sid=sid),
                frame(Instruction.GET_ASSET_VALUE_CURRENT, symbol, request_id=rid, sid=sid),
            ]
        elif kind == "switch":
            target = draw(st.integers(-1, 2))
            batch = [frame(Instruction.SWITCH_STATE, target, request_id=rid, sid=sid)]
        else:
            batch = [draw(st.sampled_from(OTHERS))]
        for data in batch:
            how = draw(st.sampled_from(["as is", "as is", "mangled", "resized"]))
            if how == "mangled":  # a byte of the checked header fields, or of the data
                at = draw(st.integers(0, 23) | st.integers(80, 100))
                data = mangle(data, at, draw(st.integers(0, 255)))
            elif how == "resized":  # the size field wrong: skipped or refused alike
                data = data[:20] + struct.pack("<I", draw(st.integers(0, 40))) + data[24:]
            sent.append(data)
    return b"".join(sent)


@settings(max_examples=200, deadline=None)
@given(streams(), st.lists(st.integers(1, 300), max_size=8))
def test_the_lean_path_decides_every_frame_as_the_reference_does(
    data: bytes, cuts: list[int]
) -> None:
    chunks, at = [], 0
    for cut in cuts:  # split anywhere, also mid-header
        chunks.append(data[at : at + cut])
        at += cut
    chunks.append(data[at:])

    reference = Connection(Role.SERVER, receive_limit=LIMIT)
    lean = LeanConnection(Role.SERVER, receive_limit=LIMIT)
    assert run(lean, chunks, lean=True) == run(reference, chunks, lean=False)


def same_as_reference(data: bytes, chunks: list[bytes] | None = None) -> bool:
    """The pair path, with the lean and reference paths behind it, decides ``data`` as
    the reference alone does: the same messages, answer bytes and states."""
    reference = Connection(Role.SERVER, receive_limit=LIMIT)
    paired = LeanConnection(Role.SERVER, receive_limit=LIMIT)
    expected = run(reference, chunks or [data], lean=False)
    got = run(paired, chunks or [data], lean=True, pairs=True)
    if len(got) != len(expected):
        return False
    # A pair's first entry has no state of its own: compare it without one.
    return all(
        g == e if g[-1] is not None else g[:-1] == e[:-1]
        for g, e in zip(got, expected, strict=True)
    )


@settings(max_examples=200, deadline=None)
@given(streams(), st.lists(st.integers(1, 300), max_size=8))
def test_quote_pairs_are_decided_as_the_reference_does(data: bytes, cuts: list[int]) -> None:
    """Two frames at once (``next_pair``/``send_pair``) where they are a quote, frame by
    frame otherwise: the same outcome as the reference, however the bytes are split."""
    chunks, at = [], 0
    for cut in cuts:
        chunks.append(data[at : at + cut])
        at += cut
    chunks.append(data[at:])
    assert same_as_reference(data, chunks)


def test_a_pair_is_taken_only_whole_legal_and_under_one_session() -> None:
    switch = frame(Instruction.SWITCH_STATE, 1, request_id=7)
    quote = frame(Instruction.GET_ASSET_VALUE_CURRENT, "AAPL", request_id=8)
    conn = LeanConnection(Role.SERVER, receive_limit=LIMIT)
    conn.receive_data(switch + quote[:-1])
    assert conn.next_pair() is None  # the quote is not whole yet
    conn.receive_data(quote[-1:])
    pair = conn.next_pair()
    assert pair is not None and (pair.switch_id, pair.quote_id, pair.symbol) == (7, 8, "AAPL")
    assert conn.state is State.COMMAND and not conn.drained  # nothing taken yet
    switched = ANSWERS[Instruction.SWITCH_STATE][1]  # type: ignore[index]
    priced = ANSWERS[Instruction.GET_ASSET_VALUE_CURRENT]
    sent = conn.send_pair(pair, switched, priced)  # type: ignore[arg-type]
    reference = Connection(Role.SERVER, receive_limit=LIMIT)
    reference.receive_data(switch + quote)
    expected = b""
    for _ in range(2):  # each answered before the next is read, as a server does
        message = reference.next_message()
        assert isinstance(message, Message)
        expected += answer(reference, message)
    assert sent == expected and conn.state is reference.state is State.COMMAND
    assert conn.drained

    # In the data transfer state switchState(1) is not legal: nothing is taken.
    conn.state = State.DATA_TRANSFER
    conn.receive_data(switch + quote)
    pair = conn.next_pair()
    assert pair is not None
    assert conn.send_pair(pair, switched, priced) is None
    assert conn.state is State.DATA_TRANSFER and not conn.drained

    # Two sessions, or switchState(0) first: not a pair.
    other = frame(Instruction.GET_ASSET_VALUE_CURRENT, "AAPL", sid=bytes(range(16)))
    for data in (switch + other, frame(Instruction.SWITCH_STATE, 0) + quote):
        conn = LeanConnection(Role.SERVER, receive_limit=LIMIT)
        conn.receive_data(data)
        assert conn.next_pair() is None
    assert LeanConnection(Role.CLIENT).next_pair() is None


def test_every_mangled_byte_of_a_quotes_frames_is_decided_as_the_reference_does() -> None:
    """Each checked byte of both frames, changed to several values, in the state where
    the frame is legal, with a valid frame behind it (so a wrong size is noticed)."""
    switch = frame(Instruction.SWITCH_STATE, 1, request_id=5)
    quote = frame(Instruction.GET_ASSET_VALUE_CURRENT, "AAPL", request_id=5)
    for before, target in ((b"", switch), (switch, quote)):
        for at in [*range(24), *range(80, len(target))]:
            for value in {0, 1, 2, 9, 0xFF, target[at] ^ 1} - {target[at]}:
                data = before + mangle(target, at, value) + switch + quote
                reference = Connection(Role.SERVER, receive_limit=LIMIT)
                lean = LeanConnection(Role.SERVER, receive_limit=LIMIT)
                expected = run(reference, [data], lean=False)
                assert run(lean, [data], lean=True) == expected, (at, value)
                assert same_as_reference(data), (at, value)


def test_a_quote_through_the_lean_path_is_answered_with_the_encoders_bytes() -> None:
    quote = Message(Instruction.GET_ASSET_VALUE_CURRENT, ("AAPL",), request_id=41)
    payload = packets_for(("AAPL", "187.25"), chunk_size=8)  # several packets
    answer = Encoded(payload, 4096)
    ok = Encoded([Message(Instruction.STATE_SWITCH_SUCCESS, (1,))], 4096)

    reference, lean = Connection(Role.SERVER), LeanConnection(Role.SERVER)
    for conn in (reference, lean):
        conn.receive_data(frame(Instruction.SWITCH_STATE, 1, request_id=40))
    assert lean.next_lean() is not None and lean.state is State.AWAIT_DATA_SWITCH
    assert not isinstance(reference.next_message(), NeedData)
    switched = reference.send(Message(Instruction.STATE_SWITCH_SUCCESS, (1,), request_id=40))
    assert lean.send_encoded(ok, 40) == switched
    assert lean.state is reference.state is State.DATA_TRANSFER

    for conn in (reference, lean):
        conn.receive_data(encode_message(quote))
    request = lean.next_lean()
    assert request is not None and request.arg == "AAPL" and request.request_id == 41
    assert not isinstance(reference.next_message(), NeedData)
    expected = b"".join(reference.send(replace(p, request_id=41)) for p in payload)
    assert lean.send_encoded(answer, 41) == expected
    assert lean.state is reference.state is State.COMMAND
    assert answer.for_request(0) == b"".join(encode_message(p) for p in payload)

    # Not in the state that allows it: refused like ``send`` refuses.
    with pytest.raises(LocalProtocolError) as refused:
        lean.send_encoded(answer, 41)
    assert refused.value.code is ErrorCode.WRONG_STATE
    assert lean.state is State.COMMAND


def test_a_client_connection_never_takes_the_lean_path() -> None:
    client = LeanConnection(Role.CLIENT)
    client.receive_data(frame(Instruction.SWITCH_STATE, 1))
    assert client.next_lean() is None
    with pytest.raises(ProtocolError) as refused:
        client.next_message()
    assert refused.value.code is ErrorCode.TYPE_MISMATCH
