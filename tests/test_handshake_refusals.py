"""The GPG handshake and the sealed link against a real master process.

Every way in that must fail does, is logged on the master with its reason,
and tells the peer only that it was refused; a key made with plain gpg works.
"""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import test_master_link
from test_master_link import MasterProcess, wait_logged, worker_list
from test_workers_keys import KeyPair, WorkerPeer, keys, register
from tls_support import connect

from papertrader.protocol import ErrorCode, Instruction, Message, encode_message
from papertrader.protocol.link_seal import EphemeralShare, auth_transcript
from papertrader.protocol.values import timestamp_micros
from papertrader.store.pool import ConnectionPool
from papertrader.worker.handshake import HandshakeFailed, WorkerHandshake, read_frame
from papertrader.worker.link import LinkRefused

GOOD_PASSWORD = "paper trading practice 7"  # passes the password policy

GENERIC = "refused by the master (its log says why)"

# The real master process and a pool on its database, as in test_master_link.
master = test_master_link.master
pool = test_master_link.pool


class RecordingSocket:
    """A socket that keeps every byte written to it (to capture a handshake)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sent: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.sent.append(bytes(data))
        self.sock.sendall(data)

    def recv(self, size: int) -> bytes:
        return self.sock.recv(size)


def refused(peer: WorkerPeer) -> LinkRefused:
    with pytest.raises(LinkRefused) as caught:
        peer.handshake()
    assert caught.value.code == ErrorCode.NOT_ALLOWED
    assert caught.value.reason == GENERIC  # nothing about why
    assert peer.read() is None  # and the connection is closed
    return caught.value


def linked(master: MasterProcess, pool: ConnectionPool, name: str, key: KeyPair) -> WorkerPeer:
    worker_uuid = uuid.uuid4()
    register(pool, name, worker_uuid, key=key)
    peer = WorkerPeer(master.port, worker_uuid, key)
    peer.handshake()
    assert peer.hello(name).instruction is Instruction.LINK_WELCOME
    return peer


def test_a_key_made_with_plain_gpg_registers_and_works(
    master: MasterProcess, pool: ConnectionPool
) -> None:
    key = keys().gpg_made("plain-gpg-worker")  # signing only, no encryption subkey
    peer = linked(master, pool, "plain", key)
    peer.send(Instruction.REGISTER, "gina", "gina@example.com", GOOD_PASSWORD, request_id=5)
    reply = peer.read()
    assert reply is not None and reply.instruction is Instruction.REGISTER_SUCCESS
    assert reply.request_id == 5 and reply.worker_uuid == peer.worker_uuid
    assert [w["name"] for w in worker_list(master.port)] == ["plain"]


def test_a_signature_by_another_key_is_refused(master: MasterProcess, pool: ConnectionPool) -> None:
    worker_uuid = uuid.uuid4()
    register(pool, "victim", worker_uuid)  # registered with the key of "victim"
    # Another registered worker, linked once: the master knows its key well.
    linked(master, pool, "thief", keys().key("thief")).close()
    refused(WorkerPeer(master.port, worker_uuid, keys().key("thief")))
    log = wait_logged(master, "signed with key")
    assert f"worker victim signed with key {keys().key('thief').fingerprint}" in log
    # A key the master never saw fails as a bad signature.
    refused(WorkerPeer(master.port, worker_uuid, keys().key("stranger")))
    assert "bad signature from worker victim" in wait_logged(master, "bad signature")


def test_a_wrong_ip_and_an_empty_allowlist_are_refused(
    master: MasterProcess, pool: ConnectionPool
) -> None:
    elsewhere, nowhere = uuid.uuid4(), uuid.uuid4()
    register(pool, "far", elsewhere, ips=("10.0.0.0/8",))
    register(pool, "empty", nowhere, ips=())
    refused(WorkerPeer(master.port, elsewhere, keys().key("far")))
    refused(WorkerPeer(master.port, nowhere, keys().key("empty")))
    log = wait_logged(master, "worker empty may not connect")
    assert "worker far may not connect from 127.0.0.1 (allowed: 10.0.0.0/8)" in log
    assert "worker empty may not connect from 127.0.0.1 (allowed: none" in log


def test_a_stale_handshake_is_refused(master: MasterProcess, pool: ConnectionPool) -> None:
    worker_uuid = uuid.uuid4()
    key = register(pool, "slow", worker_uuid)
    master_key = keys().master
    sock = connect(master.port, timeout=10)
    sock.sendall(encode_message(Message(Instruction.LINK_START, worker_uuid=worker_uuid)))
    challenge, _, master_share = read_frame(sock, 65536).args
    assert isinstance(challenge, bytes) and isinstance(master_share, bytes)
    keyring = key.keyring()
    keyring.import_public(master_key.public_key)
    sealed = keyring.encrypt(os.urandom(32), master_key.fingerprint)
    signed_at = datetime.now(timezone.utc) - timedelta(minutes=5)  # beyond the 30 s skew
    nonce, share = os.urandom(32), EphemeralShare().public
    transcript = auth_transcript(
        challenge, master_share, worker_uuid, timestamp_micros(signed_at), nonce, share, sealed
    )
    signature = keyring.sign(transcript, key.fingerprint)
    auth = Message(
        Instruction.LINK_AUTH, (signed_at, nonce, share, sealed, signature), worker_uuid=worker_uuid
    )
    sock.sendall(encode_message(auth))
    answer = read_frame(sock, 65536)
    assert answer.instruction is Instruction.LINK_REFUSED and answer.args[1] == GENERIC
    assert "stale handshake from worker slow" in wait_logged(master, "stale handshake")


def test_a_captured_handshake_replayed_is_refused(
    master: MasterProcess, pool: ConnectionPool
) -> None:
    worker_uuid = uuid.uuid4()
    key = register(pool, "echo", worker_uuid)
    recorder = RecordingSocket(connect(master.port, timeout=10))
    shake = WorkerHandshake(
        key.keyring(), key.fingerprint, keys().master.fingerprint, worker_uuid, 65536
    )
    shake(recorder)  # type: ignore[arg-type]  # a genuine handshake, recorded
    start, captured_auth = recorder.sent
    recorder.sock.close()

    replay = connect(master.port, timeout=10)
    replay.sendall(start)
    challenge = read_frame(replay, 65536)
    assert challenge.instruction is Instruction.LINK_CHALLENGE  # a fresh one
    replay.sendall(captured_auth)  # answered with the old, fresh-looking signature
    answer = read_frame(replay, 65536)
    assert answer.instruction is Instruction.LINK_REFUSED and answer.args[1] == GENERIC
    log = wait_logged(master, "bad signature from worker echo")
    assert "not over this connection's challenge" in log
    assert worker_list(master.port) == []


def test_garbage_in_the_handshake_is_refused(master: MasterProcess) -> None:
    sock = connect(master.port, timeout=10)
    sock.sendall(encode_message(Message(Instruction.LINK_START)))
    assert read_frame(sock, 65536).instruction is Instruction.LINK_CHALLENGE
    sock.sendall(b"GET / HTTP/1.1\r\n" + bytes(80))
    answer = read_frame(sock, 65536)
    assert answer.instruction is Instruction.LINK_REFUSED and answer.args[1] == GENERIC
    assert "unreadable answer to the challenge" in wait_logged(master, "unreadable answer")

    hello_first = connect(master.port, timeout=10)
    hello_first.sendall(encode_message(Message(Instruction.LINK_HELLO, ("w", "r", "w:1"))))
    answer = read_frame(hello_first, 65536)
    assert answer.instruction is Instruction.LINK_REFUSED and answer.args[1] == GENERIC
    assert "without the GPG handshake" in wait_logged(master, "without the GPG handshake")


def test_a_master_with_another_key_is_not_trusted(
    master: MasterProcess, pool: ConnectionPool
) -> None:
    worker_uuid = uuid.uuid4()
    key = register(pool, "careful", worker_uuid)
    wrong_pin = keys().key("some-other-master").fingerprint
    sock = connect(master.port, timeout=10)
    shake = WorkerHandshake(key.keyring(), key.fingerprint, wrong_pin, worker_uuid, 65536)
    with pytest.raises(HandshakeFailed, match="not the pinned master_fingerprint"):
        shake(sock)


def test_a_flipped_bit_on_the_link_drops_it(master: MasterProcess, pool: ConnectionPool) -> None:
    peer = linked(master, pool, "flip", keys().key("flip"))
    assert peer.sealer is not None
    record = bytearray(peer.sealer.seal(encode_message(Message(Instruction.HEARTBEAT))))
    record[len(record) // 2] ^= 0x10
    peer.sock.sendall(bytes(record))
    assert peer.closed_by_master()
    assert "does not open" in wait_logged(master, "does not open")
    assert worker_list(master.port) == []


def test_a_frame_replayed_on_the_link_drops_it(master: MasterProcess, pool: ConnectionPool) -> None:
    peer = linked(master, pool, "again", keys().key("again"))
    peer.send(Instruction.LOGIN, "nobody", GOOD_PASSWORD, False, request_id=1)
    first = peer.read()
    assert first is not None and first.instruction is Instruction.LOGIN_FAIL
    peer.sock.sendall(peer.sent_records[-1])  # the same sealed LOGIN once more
    assert peer.closed_by_master()
    assert "sealed record 2 does not open" in wait_logged(master, "sealed record 2")


def test_unsealed_frames_after_the_handshake_drop_the_link(
    master: MasterProcess, pool: ConnectionPool
) -> None:
    peer = linked(master, pool, "plain-after", keys().key("plain-after"))
    peer.sock.sendall(encode_message(Message(Instruction.HEARTBEAT, worker_uuid=peer.worker_uuid)))
    assert peer.closed_by_master()


def test_gpg_is_there() -> None:
    """The suite needs GnuPG 2 (the keys above are real)."""
    out = subprocess.run(["gpg", "--version"], capture_output=True, text=True, check=True)
    assert "GnuPG" in out.stdout
