"""Sealed link records (protocol/link_seal.py), sans-IO: what opens and what must not."""

from __future__ import annotations

import os
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from papertrader.protocol import Instruction, Message, encode_message
from papertrader.protocol.link_seal import (
    LENGTH_PREFIX,
    Direction,
    Opener,
    Sealer,
    SealError,
    auth_transcript,
    proof_transcript,
)

KEY = bytes(range(32))
WORKER = uuid.UUID("c0ffee00-1234-4567-89ab-cdef00000001")
UP = Direction.WORKER_TO_MASTER


def frame(request_id: int) -> bytes:
    return encode_message(Message(Instruction.HEARTBEAT, request_id=request_id, worker_uuid=WORKER))


def pair(direction: Direction = UP) -> tuple[Sealer, Opener]:
    return Sealer(KEY, WORKER, direction), Opener(KEY, WORKER, direction, 65536)


def opened(opener: Opener, data: bytes) -> list[bytes]:
    opener.receive_data(data)
    frames = []
    while (one := opener.next_frame()) is not None:
        frames.append(one)
    return frames


@given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=8), st.integers(1, 50))
def test_records_open_in_order_however_the_bytes_are_cut(frames: list[bytes], cut: int) -> None:
    sealer, opener = pair()
    stream = b"".join(sealer.seal(f) for f in frames)
    got: list[bytes] = []
    for start in range(0, len(stream), cut):
        got += opened(opener, stream[start : start + cut])
    assert got == frames


def test_a_flipped_bit_anywhere_is_refused_and_stays_refused() -> None:
    sealer = pair()[0]
    record, following = sealer.seal(frame(1)), sealer.seal(frame(2))
    for position in (0, LENGTH_PREFIX, len(record) // 2, len(record) - 1):
        tampered = bytearray(record)
        tampered[position] ^= 0x01
        opener = pair()[1]
        with pytest.raises(SealError):  # a longer length reads into the next record
            opened(opener, bytes(tampered) + following)
        with pytest.raises(SealError):  # the link is over: nothing opens after that
            opened(opener, pair()[0].seal(frame(1)))


def test_replayed_reordered_and_injected_records_are_refused() -> None:
    sealer = pair()[0]
    first, second = sealer.seal(frame(1)), sealer.seal(frame(2))

    replay = pair()[1]
    assert opened(replay, first) == [frame(1)]
    with pytest.raises(SealError, match="does not open"):
        opened(replay, first)

    reorder = pair()[1]
    with pytest.raises(SealError):
        opened(reorder, second)

    inject = pair()[1]
    forged = Sealer(os.urandom(32), WORKER, UP).seal(frame(1))
    with pytest.raises(SealError):
        opened(inject, forged)


def test_records_are_bound_to_their_direction_and_worker() -> None:
    record = pair(Direction.MASTER_TO_WORKER)[0].seal(frame(1))
    with pytest.raises(SealError):  # reflected back at its sender
        opened(pair(UP)[1], record)
    other = Opener(KEY, uuid.uuid4(), Direction.MASTER_TO_WORKER, 65536)
    with pytest.raises(SealError):  # another worker's link
        opened(other, record)


def test_an_oversized_length_is_refused_before_reading_it() -> None:
    opener = Opener(KEY, WORKER, UP, 1024)
    with pytest.raises(SealError, match="sealed record of"):
        opened(opener, (10**6).to_bytes(4, "little"))


def test_transcripts_bind_every_field() -> None:
    base = (b"c" * 32, WORKER, 1_700_000_000_000_000, b"n" * 32, b"sealed key")
    signed = auth_transcript(*base)
    for index, changed in enumerate(
        (b"C" * 32, uuid.uuid4(), 1_700_000_000_000_001, b"N" * 32, b"other key")
    ):
        variant = list(base)
        variant[index] = changed
        assert auth_transcript(*variant) != signed  # type: ignore[arg-type]
    assert proof_transcript(signed) != proof_transcript(auth_transcript(*base[:4], b"x"))
