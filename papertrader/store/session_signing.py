"""Session records signed by the master (Ed25519), checked by every reader.

Workers may read sessions but not write them (their Redis users), and the
master alone mints them. The signature is the second wall: anyone else who
can write to Redis (another program on a shared server, a leaked admin
password, a bug in a user's rights) still cannot make a session any worker
or the master accepts, because only the master holds the private key. The
public key reaches the workers over the authenticated, sealed master link
(``LINK_SESSION_KEY`` right after ``LINK_WELCOME``), never through Redis.

The signature covers every field of the record and its id, in one canonical
byte string (:func:`signed_bytes`), and is stored beside them as ``sig``
(URL-safe base64). A record without one, or whose signature does not verify,
is refused with ``SESSION_UNVERIFIED`` and logged.

The key is a file in the master's GnuPG home (``session-signing.pem``: 0600,
PKCS#8 PEM), made at its first start; standby masters share it with the
home. Deleting it rotates the key, and every session made before then needs
a new login.
"""

from __future__ import annotations

import base64
import binascii
import os
import tempfile
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

#: The hash field holding the signature.
FIELD = "sig"
_DOMAIN = b"papertrader-session-v1\n"
KEY_FILE = "session-signing.pem"


def signed_bytes(session_hex: str, fields: dict[str, str]) -> bytes:
    """What the signature covers: the id and every field but ``sig``, sorted by name."""
    body = "\n".join(f"{name}={fields[name]}" for name in sorted(fields) if name != FIELD)
    return _DOMAIN + session_hex.encode() + b"\n" + body.encode()


#: Records a verifier remembers as verified; past this it forgets them all and starts over.
VERIFIED_CACHE_SIZE = 100_000


class SessionVerifier:
    """A public key: ``verify(session_hex, fields)`` is True for the master's records.

    It remembers the exact records (signed bytes and signature) it has verified: the
    master's drain checks the session of every order of every interval, and a record
    verified once verifies for ever under the same key, so each is checked with
    Ed25519 (about 65 us) once, not once per interval. A record changed in any byte
    is another record and is verified afresh; failures are never remembered."""

    def __init__(self, public_key: Ed25519PublicKey) -> None:
        self._key = public_key
        self._verified: set[tuple[str, bytes]] = set()

    @classmethod
    def from_bytes(cls, raw: bytes) -> SessionVerifier:
        """From the 32 raw bytes of LINK_SESSION_KEY (ValueError if they are not a key)."""
        return cls(Ed25519PublicKey.from_public_bytes(raw))

    def raw(self) -> bytes:
        return self._key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def verify(self, session_hex: str, fields: dict[str, str]) -> bool:
        signature = fields.get(FIELD)
        if not signature:
            return False
        signed = signed_bytes(session_hex, fields)
        if (signature, signed) in self._verified:
            return True
        try:
            self._key.verify(base64.urlsafe_b64decode(signature.encode()), signed)
        except (InvalidSignature, binascii.Error, ValueError):
            return False
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified.add((signature, signed))
        return True


class SessionSigner:
    """The master's private key: ``sign`` a record's fields; ``verifier`` its public half."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.verifier = SessionVerifier(private_key.public_key())

    @classmethod
    def generate(cls) -> SessionSigner:
        return cls(Ed25519PrivateKey.generate())

    def private_pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def sign(self, session_hex: str, fields: dict[str, str]) -> str:
        signature = self._key.sign(signed_bytes(session_hex, fields))
        return base64.urlsafe_b64encode(signature).decode()


def load_or_create(path: Path) -> SessionSigner:
    """The master's key in ``path``, made (0600, directory 0700) if there is none.

    Masters sharing one home (standbys) starting together agree on one key: the
    new key is written aside and linked into place, and a master that loses the
    race reads the winner's.
    """
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        signer = SessionSigner.generate()
        fd, tmp = tempfile.mkstemp(prefix=".session-key-", dir=path.parent)  # 0600
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(signer.private_pem())
            os.link(tmp, path)
            return signer
        except FileExistsError:
            pem = path.read_bytes()
        finally:
            os.unlink(tmp)
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 private key")
    return SessionSigner(key)
