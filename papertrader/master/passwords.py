"""Password hashing for account management (spec 3.1.3): bcrypt, off the event loop.

bcrypt reads at most 72 bytes (bcrypt 5 refuses longer input), while
passwords may be up to 1024 characters. Every password is therefore first
reduced to base64(SHA-256(UTF-8 password)), 44 ASCII bytes, and that is what
bcrypt hashes: long passwords keep all their strength, and no NUL byte can cut
the input short. The stored value is an ordinary ``$2b$`` bcrypt hash.

bcrypt is deliberately slow CPU work; it runs in gevent's threadpool so one
login never stalls the other connections of the process.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from typing import Any

import bcrypt
import gevent

_dummy_hashes: dict[int, bytes] = {}
_dummy_lock = threading.Lock()


def _prehash(password: str) -> bytes:
    return base64.b64encode(hashlib.sha256(password.encode("utf-8", "surrogatepass")).digest())


def _in_threadpool(function: Any, *args: Any) -> Any:
    """Run CPU-bound ``function`` in gevent's threadpool and wait for it cooperatively."""
    return gevent.get_hub().threadpool.apply(function, args)


def _hash(password: str, cost: int) -> str:
    return bcrypt.hashpw(_prehash(password), bcrypt.gensalt(rounds=cost)).decode("ascii")


def _check(password: str, stored: bytes) -> bool:
    try:
        return bcrypt.checkpw(_prehash(password), stored)
    except ValueError:  # not a bcrypt hash: treat as a mismatch, never as a match
        return False


def hash_password(password: str, cost: int) -> str:
    """A salted bcrypt hash of ``password`` with ``2**cost`` rounds."""
    return str(_in_threadpool(_hash, password, cost))


def check_password(password: str, stored_hash: str) -> bool:
    """Whether ``password`` matches ``stored_hash`` (constant-time inside bcrypt)."""
    return bool(_in_threadpool(_check, password, stored_hash.encode("ascii", "replace")))


def _dummy_hash(cost: int) -> bytes:
    with _dummy_lock:
        if cost not in _dummy_hashes:
            _dummy_hashes[cost] = _hash("not a password: timing equaliser", cost).encode("ascii")
        return _dummy_hashes[cost]


def burn_check(password: str, cost: int) -> None:
    """Spend the time of a real password check for an account that does not exist,
    so the answer time does not tell whether a username is registered."""
    stored = _in_threadpool(_dummy_hash, cost)
    _in_threadpool(_check, password, stored)
