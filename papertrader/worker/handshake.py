"""The worker's side of the link handshake (docs/PROTOCOL.md, section 11).

Before LINK_HELLO the worker proves who it is and agrees on a link key:

1. it sends LINK_START;
2. the master answers LINK_CHALLENGE(challenge, master public key); the key
   must have the fingerprint pinned in ``master_fingerprint``, otherwise this
   is not our master and the worker stops here;
3. the worker draws an ephemeral X25519 key pair and a secret, encrypts the
   secret to the pinned master key, signs (challenge, the master's X25519
   share, its UUID, the time, a nonce, its own share, the encrypted secret's
   hash) with its own key, and sends LINK_AUTH;
4. the master answers LINK_PROOF, its signature over the worker's transcript,
   which must verify with the pinned key, or LINK_REFUSED.

The link keys (HKDF over the X25519 shared secret, the secret and the
transcript; ``protocol/link_seal.py``) then seal every frame: forward secret,
the ephemeral private key is dropped once the shared secret is computed. gpg
runs only here, a few calls per connection.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import datetime, timezone

from loguru import logger

from papertrader.keyring import Keyring, KeyringError
from papertrader.protocol import (
    HEADER_SIZE,
    FrameDecoder,
    Instruction,
    Message,
    NeedData,
    ProtocolError,
    encode_message,
)
from papertrader.protocol.header import unpack_header
from papertrader.protocol.link_seal import (
    CHALLENGE_SIZE,
    LINK_KEY_SIZE,
    NONCE_SIZE,
    SHARE_SIZE,
    EphemeralShare,
    LinkKeys,
    ShareError,
    auth_transcript,
    derive_link_keys,
    proof_transcript,
)
from papertrader.protocol.values import timestamp_micros
from papertrader.worker.link import LinkDropped, LinkRefused

#: The master's public key travels in LINK_CHALLENGE; anything bigger is not one.
MAX_MASTER_KEY = 64 * 1024


class HandshakeFailed(LinkDropped):
    """The master did not prove itself (wrong key, bad proof, unexpected answer)."""


def read_frame(sock: socket.socket, max_data_size: int) -> Message:
    """Exactly one plain frame from ``sock`` (never a byte more: sealed ones follow)."""
    header_bytes = _read_exactly(sock, HEADER_SIZE)
    try:
        header = unpack_header(header_bytes)
    except ProtocolError as exc:
        raise HandshakeFailed(f"unreadable handshake frame from the master: {exc.reason}") from None
    if header.data_size > max_data_size:
        raise HandshakeFailed(f"handshake frame of {header.data_size} bytes from the master")
    decoder = FrameDecoder(max_data_size)
    decoder.receive_data(header_bytes + _read_exactly(sock, header.data_size))
    try:
        message = decoder.next_message()
    except ProtocolError as exc:
        raise HandshakeFailed(f"unreadable handshake frame from the master: {exc.reason}") from None
    assert not isinstance(message, NeedData)
    return message


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        try:
            data = sock.recv(size - len(chunks))
        except TimeoutError:
            raise LinkDropped("the master did not finish the handshake in time") from None
        if not data:
            raise LinkDropped("the master closed the connection during the handshake")
        chunks += data
    return bytes(chunks)


class WorkerHandshake:
    """Runs the handshake on a fresh connection; returns the link keys."""

    def __init__(
        self,
        keyring: Keyring,
        own_fingerprint: str,
        master_fingerprint: str,
        worker_uuid: uuid.UUID,
        max_data_size: int,
    ) -> None:
        self.keyring = keyring
        self.own_fingerprint = own_fingerprint
        self.master_fingerprint = master_fingerprint
        self.worker_uuid = worker_uuid
        self.max_data_size = max_data_size
        self._master_key_known = False

    def __call__(self, sock: socket.socket) -> LinkKeys:
        send = self._sender(sock)
        send(Message(Instruction.LINK_START, worker_uuid=self.worker_uuid))
        challenge_msg = self._expect(
            read_frame(sock, self.max_data_size), Instruction.LINK_CHALLENGE
        )
        challenge, master_key, master_share = challenge_msg.args
        if not (isinstance(challenge, bytes) and len(challenge) == CHALLENGE_SIZE):
            raise HandshakeFailed("the master's challenge is malformed")
        if not (isinstance(master_share, bytes) and len(master_share) == SHARE_SIZE):
            raise HandshakeFailed("the master's X25519 share is malformed")
        if not (isinstance(master_key, bytes) and 0 < len(master_key) <= MAX_MASTER_KEY):
            raise HandshakeFailed("the master's public key is malformed")
        self._learn_master_key(master_key)

        secret = os.urandom(LINK_KEY_SIZE)
        nonce = os.urandom(NONCE_SIZE)
        ephemeral = EphemeralShare()
        try:
            shared = ephemeral.exchange(master_share)  # the private half is dropped here
        except ShareError as exc:
            raise HandshakeFailed(f"the master's X25519 share: {exc}") from None
        signed_at = datetime.now(timezone.utc)
        try:
            sealed_key = self.keyring.encrypt(secret, self.master_fingerprint)
            transcript = auth_transcript(
                challenge, master_share, self.worker_uuid, timestamp_micros(signed_at), nonce,
                ephemeral.public, sealed_key,
            )  # fmt: skip
            signature = self.keyring.sign(transcript, self.own_fingerprint)
        except KeyringError as exc:
            raise HandshakeFailed(f"gpg failed: {exc}") from None
        send(
            Message(
                Instruction.LINK_AUTH,
                (signed_at, nonce, ephemeral.public, sealed_key, signature),
                worker_uuid=self.worker_uuid,
            )
        )
        proof_msg = self._expect(read_frame(sock, self.max_data_size), Instruction.LINK_PROOF)
        proof = proof_msg.arg("signature")
        signer = (
            self.keyring.verify(proof, proof_transcript(transcript))
            if isinstance(proof, bytes)
            else None
        )
        if signer != self.master_fingerprint:
            raise HandshakeFailed(
                "the master's proof is not signed by the pinned master key "
                f"{self.master_fingerprint}: not our master"
            )
        keys = derive_link_keys(shared, secret, transcript)
        del shared, secret  # only the link keys live on, as long as the link
        return keys

    def _sender(self, sock: socket.socket) -> _Send:
        return _Send(sock, self.max_data_size)

    @staticmethod
    def _expect(message: Message, wanted: Instruction) -> Message:
        if message.instruction is Instruction.LINK_REFUSED:
            code, reason = message.args[0], message.args[1]
            raise LinkRefused(code if isinstance(code, int) else 0, str(reason))
        if message.instruction is not wanted:
            raise HandshakeFailed(
                f"the master answered with {message.instruction.name}, expected {wanted.name}"
            )
        return message

    def _learn_master_key(self, master_key: bytes) -> None:
        """Import the master's key once, if it is the pinned one."""
        if self._master_key_known:
            return
        try:
            found = self.keyring.import_public(master_key)
        except KeyringError as exc:
            raise HandshakeFailed(f"the master's public key cannot be read: {exc}") from None
        if self.master_fingerprint not in found:
            raise HandshakeFailed(
                f"the master's key is {', '.join(found)}, not the pinned master_fingerprint "
                f"{self.master_fingerprint}: not our master (or the fingerprint is wrong)"
            )
        logger.debug(f"master key {self.master_fingerprint} imported")
        self._master_key_known = True


class _Send:
    def __init__(self, sock: socket.socket, max_data_size: int) -> None:
        self.sock = sock
        self.max_data_size = max_data_size

    def __call__(self, message: Message) -> None:
        self.sock.sendall(encode_message(message, self.max_data_size))
