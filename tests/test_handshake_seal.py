"""Sealed link records (protocol/link_seal.py), sans-IO: what opens and what must not."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from papertrader.protocol import Instruction, Message, encode_message
from papertrader.protocol.link_seal import (
    LENGTH_PREFIX,
    Direction,
    EphemeralShare,
    Opener,
    Sealer,
    SealError,
    ShareError,
    auth_transcript,
    derive_link_keys,
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
    base = (b"c" * 32, b"m" * 32, WORKER, 1_700_000_000_000_000, b"n" * 32, b"w" * 32,
            b"sealed key")  # fmt: skip
    signed = auth_transcript(*base)
    changes = (b"C" * 32, b"M" * 32, uuid.uuid4(), 1_700_000_000_000_001, b"N" * 32, b"W" * 32,
               b"other key")  # fmt: skip
    for index, changed in enumerate(changes):
        variant = list(base)
        variant[index] = changed
        assert auth_transcript(*variant) != signed  # type: ignore[arg-type]
    assert proof_transcript(signed) != proof_transcript(auth_transcript(*base[:6], b"x"))


# -- forward secrecy: the link keys of docs/PROTOCOL.md section 11.1, golden vectors -----------

#: RFC 7748 section 6.1's X25519 key pairs, as the master's and the worker's ephemeral
#: shares (fixed here; drawn fresh for every connection in the servers).
MASTER_EPHEMERAL = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"
WORKER_EPHEMERAL = "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"
CHALLENGE = bytes([0x11]) * 32
NONCE = bytes([0x22]) * 32
SECRET = bytes([0x33]) * 32
SIGNED_AT = 1_700_000_000_000_000
SEALED_KEY = b"the OpenPGP message sealing SECRET"


def key_vectors() -> dict[str, str]:
    """Every intermediate value of one handshake's key derivation, hex."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    master = EphemeralShare(X25519PrivateKey.from_private_bytes(bytes.fromhex(MASTER_EPHEMERAL)))
    worker = EphemeralShare(X25519PrivateKey.from_private_bytes(bytes.fromhex(WORKER_EPHEMERAL)))
    master_share, worker_share = master.public, worker.public
    transcript = auth_transcript(
        CHALLENGE, master_share, WORKER, SIGNED_AT, NONCE, worker_share, SEALED_KEY
    )
    shared = worker.exchange(master_share)
    assert master.exchange(worker_share) == shared  # both sides agree
    keys = derive_link_keys(shared, SECRET, transcript)
    hello = Sealer(keys.worker_to_master, WORKER, UP).seal(frame(0))
    return {
        "master_share": master_share.hex(),
        "worker_share": worker_share.hex(),
        "shared": shared.hex(),
        "transcript": transcript.hex(),
        "worker_to_master": keys.worker_to_master.hex(),
        "master_to_worker": keys.master_to_worker.hex(),
        "sealed_heartbeat": hello.hex(),
    }


def test_link_keys_match_the_golden_vectors_of_protocol_md() -> None:
    docs = (Path(__file__).resolve().parents[1] / "docs" / "PROTOCOL.md").read_text()
    for name, value in key_vectors().items():
        shown = "\n".join(value[i : i + 64] for i in range(0, len(value), 64))
        assert f"{name}:\n{shown}\n" in docs, f"{name} missing or different in PROTOCOL.md"


def test_an_ephemeral_share_is_used_once_and_low_order_shares_are_refused() -> None:
    share = EphemeralShare()
    share.exchange(EphemeralShare().public)
    with pytest.raises(ShareError, match="already used"):
        share.exchange(EphemeralShare().public)
    with pytest.raises(ShareError, match="low order"):
        EphemeralShare().exchange(bytes(32))  # the all-zero point
    with pytest.raises(ShareError, match="32 bytes"):
        EphemeralShare().exchange(b"short")


if __name__ == "__main__":  # print the vectors for docs/PROTOCOL.md
    for name, value in key_vectors().items():
        print(f"{name}:\n" + "\n".join(value[i : i + 64] for i in range(0, len(value), 64)))
