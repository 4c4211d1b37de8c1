"""Password hashing for account management (spec 3.1.3): bcrypt, in its own bounded pool.

Every password is first normalised to Unicode NFKC (``password_policy``),
then reduced to base64(SHA-256(UTF-8)), 44 ASCII bytes, and that is what
bcrypt hashes: bcrypt reads at most 72 bytes, so long passwords keep all
their strength, and no NUL byte can cut the input short. The stored value is
an ordinary ``$2b$`` bcrypt hash.

bcrypt runs in :class:`~papertrader.master.bcrypt_pool.BcryptPool`, bounded
and with the request's deadline; :func:`burn_check` spends exactly the time
of a real check on the same normalised input, so a login's answer time
tells nothing about whether the username exists, whatever the password's
length.
"""

from __future__ import annotations

import base64
import hashlib
import threading

import bcrypt

from papertrader.master.bcrypt_pool import BcryptPool, Job
from papertrader.master.password_policy import normalise

_dummy_hashes: dict[int, bytes] = {}
_dummy_lock = threading.Lock()


def _prehash(password: str) -> bytes:
    text = normalise(password)
    return base64.b64encode(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest())


def _hash(password: str, cost: int) -> str:
    return bcrypt.hashpw(_prehash(password), bcrypt.gensalt(rounds=cost)).decode("ascii")


def _check(password: str, stored: bytes) -> bool:
    try:
        return bcrypt.checkpw(_prehash(password), stored)
    except ValueError:  # not a bcrypt hash: treat as a mismatch, never as a match
        return False


def _dummy_hash(cost: int) -> bytes:
    with _dummy_lock:
        if cost not in _dummy_hashes:
            _dummy_hashes[cost] = _hash("not a password: timing equaliser", cost).encode("ascii")
        return _dummy_hashes[cost]


def _burn(password: str, cost: int) -> bool:
    _check(password, _dummy_hash(cost))
    return False


def hash_password(pool: BcryptPool, job: Job, password: str, cost: int) -> str:
    """A salted bcrypt hash of ``password`` with ``2**cost`` rounds (Busy, Expired)."""
    return pool.run(job, _hash, password, cost)


def check_password(pool: BcryptPool, job: Job, password: str, stored_hash: str) -> bool:
    """Whether ``password`` matches ``stored_hash`` (constant-time inside bcrypt)."""
    return pool.run(job, _check, password, stored_hash.encode("ascii", "replace"))


def burn_check(pool: BcryptPool, job: Job, password: str, cost: int) -> None:
    """Spend the time of a real password check for an account that does not exist
    (or has no password): the same normalising, hashing and bcrypt work."""
    pool.run(job, _burn, password, cost)
