"""Abuse limits shared by every server process: rates, back-off, pending orders.

* :mod:`.rates`: ``Rate`` ("30/minute"), the setting type of every limit.
* :mod:`.limiter`: :class:`RateLimiter`, GCRA done atomically in Redis, so
  all workers share one budget per rule and subject.
* :mod:`.backoff`: :class:`LoginBackoff`, exponential waits per username
  after failed logins, never a permanent lockout.
* :mod:`.subjects`: how an IP address, a username or an e-mail becomes the
  subject of a limit (IPv6 per /64, names case-folded and hashed).

Refusals are :class:`Refused` with ``retry_after`` in seconds; the protocol
carries them as failure returns with ``ErrorCode.RATE_LIMITED`` and a reason
ending in ``retry after N s`` (:func:`retry_after_text`).
"""

from __future__ import annotations

import importlib
from typing import Any

#: Names exported here, by the submodule holding them. Loaded on first use:
#: the settings import ``.rates``, and every `pt` command (`pt --help` too)
#: would otherwise pay for importing redis through ``.limiter``.
_EXPORTS = {
    "Allowed": "limiter",
    "RateLimiter": "limiter",
    "Refused": "limiter",
    "Rule": "limiter",
    "retry_after_text": "limiter",
    "Rate": "rates",
    "parse_rate": "rates",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "Allowed",
    "Rate",
    "RateLimiter",
    "Refused",
    "Rule",
    "parse_rate",
    "retry_after_text",
]
