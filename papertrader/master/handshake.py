"""The master's side of the link handshake (spec 3.1.5, docs/PROTOCOL.md section 11).

A worker opens with LINK_START. The master answers LINK_CHALLENGE: 32 fresh
random bytes, its public key, and a fresh X25519 share (its private half lives
only in this connection's ``Challenge``). The worker answers LINK_AUTH: its
UUID (in the header), the time, a nonce, its own X25519 share, a fresh secret
encrypted to the master's key, and a GPG signature over all of it, the
challenge and the master's share. The master admits
the worker only if every check holds, cheapest first so a stranger costs no
gpg run:

1. the UUID is registered and the worker enabled;
2. the connection's source IP is in the worker's allowlist (CIDRs; an empty
   allowlist admits no address at all);
3. the signature time is within ``handshake_max_skew_seconds`` of our clock;
4. the signature is good over *this connection's* challenge (so a captured
   handshake replayed on a new connection fails) and made by the key whose
   fingerprint is registered for that UUID;
5. the secret decrypts with the master's key, and the worker's share gives an
   X25519 shared secret.

Then it signs the worker's transcript back (LINK_PROOF): the worker checks that
signature against the master fingerprint it pinned. Both sides derive the same
two link keys (``derive_link_keys``): forward secret, since the X25519 private
halves are dropped at once and never touch a disk or a long-term key. A refusal is logged here
with its reason; the worker learns only that it was refused.
"""

from __future__ import annotations

import ipaddress
import os
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

import psycopg2
from loguru import logger

from papertrader.keyring import Keyring, KeyringError
from papertrader.protocol import NIL, Instruction, Message
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
from papertrader.store import workers as worker_store
from papertrader.store.pool import ConnectionPool, PoolTimeout
from papertrader.store.workers import WorkerRecord

#: Generous bounds for an encrypted 32-byte key and an Ed25519 (or RSA) signature.
MAX_SEALED_KEY = 4096
MAX_SIGNATURE = 4096

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class HandshakeRefused(Exception):
    """The worker may not link; ``reason`` is for the master's log only."""


class HandshakeUnavailable(Exception):
    """The master cannot check the worker now (database down): the worker should retry."""


@dataclass(frozen=True)
class Admitted:
    """A worker that passed the handshake, and what the link needs from it."""

    record: WorkerRecord
    link_keys: LinkKeys
    proof: bytes


@dataclass
class Challenge:
    """One connection's challenge and the master's ephemeral X25519 share for it."""

    challenge: bytes
    ephemeral: EphemeralShare


def ip_allowed(ip: IPAddress | None, allowed: tuple[str, ...]) -> bool:
    """True if ``ip`` is in one of the CIDRs; an empty allowlist allows nothing."""
    if ip is None:
        return False
    for cidr in allowed:
        try:
            if ip in ipaddress.ip_network(cidr, strict=False):
                return True
        except ValueError:
            continue
    return False


class MasterHandshake:
    """Issues challenges and checks answers with the master's keyring."""

    def __init__(
        self, pool: ConnectionPool, keyring: Keyring, fingerprint: str, max_skew: float
    ) -> None:
        self.pool = pool
        self.keyring = keyring
        self.fingerprint = fingerprint
        self.max_skew = max_skew
        self.public_key = keyring.export_public(fingerprint, armor=False)

    def challenge(self) -> tuple[Challenge, Message]:
        """A fresh challenge and ephemeral share, and the LINK_CHALLENGE frame carrying them."""
        issued = Challenge(os.urandom(CHALLENGE_SIZE), EphemeralShare())
        frame = Message(
            Instruction.LINK_CHALLENGE,
            (issued.challenge, self.public_key, issued.ephemeral.public),
        )
        return issued, frame

    def check(self, answer: Message, issued: Challenge, ip: IPAddress | None) -> Admitted:
        """Admit or refuse the worker's LINK_AUTH (HandshakeRefused / HandshakeUnavailable)."""
        if answer.instruction is not Instruction.LINK_AUTH:
            raise HandshakeRefused(f"answered the challenge with {answer.instruction.name}")
        worker_uuid = answer.worker_uuid
        if worker_uuid == NIL:
            raise HandshakeRefused("LINK_AUTH without a worker UUID")
        signed_at, nonce, worker_share, sealed_key, signature = answer.args
        if not (
            isinstance(signed_at, datetime)
            and isinstance(nonce, bytes)
            and len(nonce) == NONCE_SIZE
            and isinstance(worker_share, bytes)
            and len(worker_share) == SHARE_SIZE
            and isinstance(sealed_key, bytes)
            and 0 < len(sealed_key) <= MAX_SEALED_KEY
            and isinstance(signature, bytes)
            and 0 < len(signature) <= MAX_SIGNATURE
        ):
            raise HandshakeRefused(f"malformed LINK_AUTH from UUID {worker_uuid}")
        record = self._record(worker_uuid)
        if not record.enabled:
            raise HandshakeRefused(f"worker {record.name} is disabled")
        if not ip_allowed(ip, record.allowed_ips):
            allowed = ", ".join(record.allowed_ips) or "none: an empty allowlist refuses all"
            raise HandshakeRefused(
                f"worker {record.name} may not connect from {ip} (allowed: {allowed})"
            )
        skew = abs((datetime.now(timezone.utc) - signed_at).total_seconds())
        if skew > self.max_skew:
            raise HandshakeRefused(
                f"stale handshake from worker {record.name}: signed {skew:.0f} s away from "
                f"the master's clock (allowed {self.max_skew:g} s; a replay, or a clock to fix)"
            )
        transcript = auth_transcript(
            issued.challenge, issued.ephemeral.public, worker_uuid, timestamp_micros(signed_at),
            nonce, worker_share, sealed_key,
        )  # fmt: skip
        public_key = self._public_key(record)
        try:
            self.keyring.import_public(public_key)
        except KeyringError:
            raise HandshakeRefused(
                f"the registered public key of worker {record.name} cannot be imported"
            ) from None
        signer = self.keyring.verify(signature, transcript)
        if signer is None:
            raise HandshakeRefused(
                f"bad signature from worker {record.name}: not over this connection's "
                "challenge (a replayed handshake?) or not by a known key"
            )
        if signer != record.gpg_fingerprint.upper():
            raise HandshakeRefused(
                f"worker {record.name} signed with key {signer}, not its registered key "
                f"{record.gpg_fingerprint}"
            )
        secret = self.keyring.decrypt(sealed_key)
        if secret is None or len(secret) != LINK_KEY_SIZE:
            raise HandshakeRefused(
                f"the link secret of worker {record.name} does not decrypt with the master's key"
            )
        try:
            shared = issued.ephemeral.exchange(worker_share)  # the private half is dropped
        except ShareError as exc:
            raise HandshakeRefused(f"worker {record.name}'s X25519 share: {exc}") from None
        keys = derive_link_keys(shared, secret, transcript)
        del shared, secret
        proof = self.keyring.sign(proof_transcript(transcript), self.fingerprint)
        return Admitted(record, keys, proof)

    def _record(self, worker_uuid: uuid.UUID) -> WorkerRecord:
        try:
            record = worker_store.get_worker_by_uuid(self.pool, worker_uuid)
        except (psycopg2.Error, PoolTimeout) as exc:
            logger.warning("cannot check worker {} ({})", worker_uuid, exc)
            raise HandshakeUnavailable("the master cannot reach its database") from None
        if record is None:
            raise HandshakeRefused(f"worker UUID {worker_uuid} is not registered")
        return record

    def _public_key(self, record: WorkerRecord) -> str:
        try:
            key = worker_store.get_public_key(self.pool, record.uuid)
        except (psycopg2.Error, PoolTimeout) as exc:
            logger.warning("cannot read the key of worker {} ({})", record.name, exc)
            raise HandshakeUnavailable("the master cannot reach its database") from None
        if not key.strip() or not record.gpg_fingerprint:
            raise HandshakeRefused(
                f"worker {record.name} has no registered key (`pt workers register --key`)"
            )
        return key
