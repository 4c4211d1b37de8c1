"""The master-worker link's handshake transcripts, link keys and sealed frames, sans-IO.

The handshake (docs/PROTOCOL.md, section 11) runs GnuPG once per link, for
identity; the link keys come from an ephemeral X25519 exchange inside it
(forward secrecy: the long-term GPG keys, stolen later, do not open a recorded
link). Each side draws a fresh X25519 key pair per connection and sends its
public share in the signed handshake; both shares are in the transcript the
worker signs and the master's proof covers. The two link keys (one per
direction) are HKDF-SHA256 over the X25519 shared secret and the secret the
worker encrypted to the master's GPG key, salted with the transcript's hash.
The private halves are dropped as soon as the shared secret is computed.

Every frame after the handshake is sealed with its direction's link key, an
AEAD (ChaCha20-Poly1305) that gpg would be far too slow for:

* a sealed record on the wire is ``u32 length`` (little-endian) then that many
  bytes of ciphertext: one whole protocol frame, encrypted, plus a 16-byte tag;
* the nonce is never sent: it is the direction byte, three zero bytes and the
  sender's sequence number (u64 LE, 0 for the first record of each direction),
  so a replayed, dropped, reordered or injected record fails to open;
* the associated data binds each record to its link and direction: a context
  string, the worker UUID, the direction byte and the length prefix.

Nothing here touches a socket or gpg: the master and the worker feed bytes in
and take bytes out, and the tests can flip bits at will.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from dataclasses import dataclass
from enum import IntEnum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from papertrader.protocol.header import HEADER_SIZE

#: Random bytes of the master's challenge and of the worker's nonce.
CHALLENGE_SIZE = 32
NONCE_SIZE = 32
#: The secret the worker draws and encrypts to the master, and each link key
#: (ChaCha20-Poly1305: 32 bytes).
LINK_KEY_SIZE = 32
#: An X25519 public share.
SHARE_SIZE = 32
TAG_SIZE = 16
LENGTH_PREFIX = 4

AUTH_CONTEXT = b"papertrader link auth v2\x00"
PROOF_CONTEXT = b"papertrader link proof v2\x00"
KEYS_CONTEXT = b"papertrader link keys v2\x00"
SEAL_CONTEXT = b"papertrader link seal v1\x00"

_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
_U64 = struct.Struct("<Q")
_SEQUENCE_LIMIT = 1 << 64


class Direction(IntEnum):
    """Which way a sealed record travels; part of its nonce and associated data."""

    WORKER_TO_MASTER = 1
    MASTER_TO_WORKER = 2


class ShareError(Exception):
    """A peer's X25519 share is malformed or of low order (no shared secret)."""


class EphemeralShare:
    """One side's X25519 key pair for one connection: ``public`` goes in the handshake,
    ``exchange`` gives the shared secret once and drops the private half."""

    def __init__(self, private: X25519PrivateKey | None = None) -> None:
        self._private: X25519PrivateKey | None = private or X25519PrivateKey.generate()
        self.public = self._private.public_key().public_bytes_raw()

    def exchange(self, peer_share: bytes) -> bytes:
        """The shared secret with ``peer_share`` (ShareError if it is no valid share)."""
        private, self._private = self._private, None  # erased: usable once
        if private is None:
            raise ShareError("this ephemeral share was already used")
        if len(peer_share) != SHARE_SIZE:
            raise ShareError(f"an X25519 share is {SHARE_SIZE} bytes, not {len(peer_share)}")
        try:
            return private.exchange(X25519PublicKey.from_public_bytes(peer_share))
        except ValueError:  # all-zero shared secret: a low-order point
            raise ShareError("the peer's X25519 share is of low order") from None
        finally:
            del private


@dataclass(frozen=True)
class LinkKeys:
    """The two link keys of one connection, one per direction."""

    worker_to_master: bytes
    master_to_worker: bytes

    def key(self, direction: Direction) -> bytes:
        if direction is Direction.WORKER_TO_MASTER:
            return self.worker_to_master
        return self.master_to_worker


def derive_link_keys(shared: bytes, secret: bytes, transcript: bytes) -> LinkKeys:
    """HKDF-SHA256 (RFC 5869): input key material the X25519 shared secret then the
    worker's GPG-sealed secret, salt SHA-256 of the auth transcript (both shares, the
    challenge, the nonce...), info ``KEYS_CONTEXT``; 64 bytes: worker-to-master key,
    then master-to-worker key."""
    okm = HKDF(
        algorithm=hashes.SHA256(),
        length=2 * LINK_KEY_SIZE,
        salt=hashlib.sha256(transcript).digest(),
        info=KEYS_CONTEXT,
    ).derive(shared + secret)
    return LinkKeys(okm[:LINK_KEY_SIZE], okm[LINK_KEY_SIZE:])


class SealError(Exception):
    """A sealed record that does not open (tampered, replayed, reordered, injected, too big).

    The link cannot go on after one: its receiver drops it.
    """


def auth_transcript(
    challenge: bytes,
    master_share: bytes,
    worker_uuid: uuid.UUID,
    signed_at_micros: int,
    nonce: bytes,
    worker_share: bytes,
    sealed_key: bytes,
) -> bytes:
    """What the worker signs: the master's challenge and X25519 share, who it is, when,
    its nonce and X25519 share, and the hash of the encrypted secret (so nobody on the
    path can swap in a share or a secret of their own). The master's proof signs its
    hash: both shares are then vouched for by both GPG keys."""
    return b"".join(
        (
            AUTH_CONTEXT,
            challenge,
            master_share,
            worker_uuid.bytes,
            _I64.pack(signed_at_micros),
            nonce,
            worker_share,
            hashlib.sha256(sealed_key).digest(),
        )
    )


def proof_transcript(auth: bytes) -> bytes:
    """What the master signs back: the digest of the worker's whole signed answer."""
    return PROOF_CONTEXT + hashlib.sha256(auth).digest()


def _nonce(direction: Direction, sequence: int) -> bytes:
    return bytes((int(direction), 0, 0, 0)) + _U64.pack(sequence)


def _associated_data(worker_uuid: uuid.UUID, direction: Direction, length: int) -> bytes:
    return SEAL_CONTEXT + worker_uuid.bytes + bytes((int(direction),)) + _U32.pack(length)


def max_record_size(max_data_size: int) -> int:
    """The largest ciphertext a receiver accepts: one whole frame plus the tag."""
    return HEADER_SIZE + max_data_size + TAG_SIZE


class Sealer:
    """Seals the frames one side sends, numbering them 0, 1, 2... (call in send order)."""

    def __init__(self, key: bytes, worker_uuid: uuid.UUID, direction: Direction) -> None:
        if len(key) != LINK_KEY_SIZE:
            raise ValueError(f"a link key is {LINK_KEY_SIZE} bytes, not {len(key)}")
        self._aead = ChaCha20Poly1305(key)
        self._worker_uuid = worker_uuid
        self._direction = direction
        self.sequence = 0

    def seal(self, frame: bytes) -> bytes:
        """One frame as one sealed record (length prefix included)."""
        if self.sequence >= _SEQUENCE_LIMIT:
            raise SealError("the link has sealed 2**64 records: reconnect")
        length = len(frame) + TAG_SIZE
        aad = _associated_data(self._worker_uuid, self._direction, length)
        sealed = self._aead.encrypt(_nonce(self._direction, self.sequence), frame, aad)
        self.sequence += 1
        return _U32.pack(length) + sealed


class Opener:
    """Opens the sealed records of one direction: bytes in, whole frames out."""

    def __init__(
        self, key: bytes, worker_uuid: uuid.UUID, direction: Direction, max_data_size: int
    ) -> None:
        if len(key) != LINK_KEY_SIZE:
            raise ValueError(f"a link key is {LINK_KEY_SIZE} bytes, not {len(key)}")
        self._aead = ChaCha20Poly1305(key)
        self._worker_uuid = worker_uuid
        self._direction = direction
        self._limit = max_record_size(max_data_size)
        self._buffer = bytearray()
        self._broken: SealError | None = None
        self.sequence = 0

    def receive_data(self, data: bytes) -> None:
        if self._broken is None:
            self._buffer += data

    def next_frame(self) -> bytes | None:
        """The next opened frame, None until a whole record has arrived; SealError if it
        does not open (then every later call raises it too)."""
        if self._broken is not None:
            raise self._broken
        if len(self._buffer) < LENGTH_PREFIX:
            return None
        (length,) = _U32.unpack_from(self._buffer)
        if not TAG_SIZE < length <= self._limit:
            raise self._break(f"sealed record of {length} bytes (allowed: up to {self._limit})")
        if len(self._buffer) < LENGTH_PREFIX + length:
            return None
        sealed = bytes(self._buffer[LENGTH_PREFIX : LENGTH_PREFIX + length])
        del self._buffer[: LENGTH_PREFIX + length]
        aad = _associated_data(self._worker_uuid, self._direction, length)
        try:
            frame = self._aead.decrypt(_nonce(self._direction, self.sequence), sealed, aad)
        except InvalidTag:
            raise self._break(
                f"sealed record {self.sequence} does not open "
                "(tampered, replayed, reordered or injected)"
            ) from None
        self.sequence += 1
        return frame

    def _break(self, reason: str) -> SealError:
        self._broken = SealError(reason)
        self._buffer.clear()
        return self._broken
