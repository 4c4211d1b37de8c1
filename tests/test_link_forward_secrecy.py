"""Forward secrecy of the master-worker link (docs/PROTOCOL.md section 11.1), on a real master.

A whole link session is recorded (inside TLS: the bytes of the link protocol
itself, handshake and sealed frames, as an eavesdropper who also broke or
bypassed TLS would have them). Then the attacker is given both long-term GPG
secret keys: the master's opens the worker's sealed secret, and still no
sealed frame opens, in either direction. The endpoints' own link keys (which
lived only in memory for the link) do open the same recording, and it holds
the forwarded password: the recording is a real one.
"""

from __future__ import annotations

import socket
import uuid
from datetime import datetime

import pytest
import test_master_link
from test_master_link import MasterProcess
from test_workers_keys import WorkerPeer, keys, register

from papertrader.protocol import (
    HEADER_SIZE,
    Instruction,
    Message,
    decode_all,
)
from papertrader.protocol.header import unpack_header
from papertrader.protocol.link_seal import (
    Direction,
    LinkKeys,
    Opener,
    SealError,
    auth_transcript,
    derive_link_keys,
)
from papertrader.protocol.values import timestamp_micros
from papertrader.store.pool import ConnectionPool

master = test_master_link.master
pool = test_master_link.pool

PASSWORD = "a password the link carries 42"


class Tap:
    """The worker's socket, every byte each way kept (an eavesdropper's recording)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sent = bytearray()
        self.received = bytearray()

    def sendall(self, data: bytes) -> None:
        self.sent += data
        self.sock.sendall(data)

    def recv(self, size: int) -> bytes:
        data = self.sock.recv(size)
        self.received += data
        return data

    def settimeout(self, value: float | None) -> None:
        self.sock.settimeout(value)

    def close(self) -> None:
        self.sock.close()


def plain_frames(stream: bytes, count: int) -> tuple[list[Message], bytes]:
    """The first ``count`` plain frames of a recorded stream, and the sealed rest."""
    messages, offset = [], 0
    for _ in range(count):
        size = HEADER_SIZE + unpack_header(stream[offset : offset + HEADER_SIZE]).data_size
        messages += decode_all(stream[offset : offset + size])
        offset += size
    return messages, stream[offset:]


def opens(key: bytes, worker_uuid: uuid.UUID, direction: Direction, sealed: bytes) -> list[bytes]:
    """The frames ``key`` opens from a recorded sealed stream (SealError at the first that
    does not)."""
    opener = Opener(key, worker_uuid, direction, 65536)
    opener.receive_data(sealed)
    frames = []
    while (frame := opener.next_frame()) is not None:
        frames.append(frame)
    return frames


def test_a_recorded_link_does_not_open_with_both_long_term_keys(
    master: MasterProcess, pool: ConnectionPool
) -> None:
    worker_uuid = uuid.uuid4()
    key = register(pool, "recorded", worker_uuid)
    peer = WorkerPeer(master.port, worker_uuid, key)
    tap = Tap(peer.sock)
    peer.sock = tap  # type: ignore[assignment]
    peer.handshake()
    assert peer.hello("recorded").instruction is Instruction.LINK_WELCOME
    peer.send(Instruction.LOGIN, "nobody-here", PASSWORD, False, request_id=1)
    answer = peer.read()
    assert answer is not None and answer.instruction is Instruction.LOGIN_FAIL
    real: LinkKeys = peer.link_keys
    peer.close()

    (start, auth), sealed_up = plain_frames(bytes(tap.sent), 2)
    (challenge, proof), sealed_down = plain_frames(bytes(tap.received), 2)
    assert start.instruction is Instruction.LINK_START
    assert challenge.instruction is Instruction.LINK_CHALLENGE
    assert auth.instruction is Instruction.LINK_AUTH
    assert proof.instruction is Instruction.LINK_PROOF
    assert sealed_up and sealed_down
    assert PASSWORD.encode() not in bytes(tap.sent)  # sealed, not in clear

    # The endpoints' link keys open the recording: the password is in it.
    up = opens(real.worker_to_master, worker_uuid, Direction.WORKER_TO_MASTER, sealed_up)
    down = opens(real.master_to_worker, worker_uuid, Direction.MASTER_TO_WORKER, sealed_down)
    assert any(PASSWORD.encode() in frame for frame in up)
    assert down

    # The attacker holds both long-term secret keys. The master's opens the sealed secret
    # (as it opened it for the handshake); the worker's key only signs. Every key that
    # can be made from what was recorded and those keys fails, both ways.
    challenge_bytes, _, master_share = challenge.args
    signed_at, nonce, worker_share, sealed_key, _ = auth.args
    assert isinstance(challenge_bytes, bytes) and isinstance(master_share, bytes)
    assert isinstance(signed_at, datetime) and isinstance(nonce, bytes)
    assert isinstance(worker_share, bytes) and isinstance(sealed_key, bytes)
    secret = keys().master.keyring().decrypt(sealed_key)
    assert secret is not None and len(secret) == 32
    assert keys().key("recorded").keyring().decrypt(sealed_key) is None
    transcript = auth_transcript(
        challenge_bytes, master_share, worker_uuid, timestamp_micros(signed_at), nonce,
        worker_share, sealed_key,
    )  # fmt: skip
    attempts = [
        LinkKeys(secret, secret),  # the secret itself as the key (the old scheme)
        derive_link_keys(b"", secret, transcript),  # the derivation without X25519
        derive_link_keys(bytes(32), secret, transcript),
        derive_link_keys(master_share + worker_share, secret, transcript),
    ]
    for attempt in attempts:
        for direction, sealed in (
            (Direction.WORKER_TO_MASTER, sealed_up),
            (Direction.MASTER_TO_WORKER, sealed_down),
        ):
            with pytest.raises(SealError, match="sealed record 0 does not open"):
                opens(attempt.key(direction), worker_uuid, direction, sealed)
