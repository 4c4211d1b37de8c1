"""How many connections a server holds: in all, and per client address.

Each server process counts its own open connections (a worker's limits are
its own; connections are not shared between processes). A connection over
either cap is answered with one ERROR frame saying which cap it hit and
closed at once, before a byte of its own is read:

* ``max_connections`` in all (``UNAVAILABLE``: "this server is full", try
  another worker);
* ``max_connections_per_address`` from one address (IPv6: one /64)
  (``RATE_LIMITED``: close some connections first).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from papertrader.limits.subjects import address_subject
from papertrader.protocol import ErrorCode


@dataclass(frozen=True)
class Refusal:
    """Why a connection is not admitted: the ERROR code and reason sent before closing."""

    code: ErrorCode
    reason: str


class ConnectionLimits:
    """``admit(ip)`` when a connection arrives (a Refusal, or None and it counts),
    ``release(subject)`` with the subject admit returned when it ends."""

    def __init__(self, total: int, per_address: int) -> None:
        self.total = total
        self.per_address = per_address
        self._open: Counter[str] = Counter()
        self._count = 0

    @property
    def count(self) -> int:
        return self._count

    def admit(self, ip: str) -> tuple[str, Refusal | None]:
        subject = address_subject(ip)
        if self._count >= self.total:
            return subject, Refusal(
                ErrorCode.UNAVAILABLE,
                f"this server is full ({self.total} connections): try again shortly, "
                "or another worker (getWorkerList on the master)",
            )
        if self._open[subject] >= self.per_address:
            return subject, Refusal(
                ErrorCode.RATE_LIMITED,
                f"too many connections from your address ({self.per_address} open): "
                "close some first; retry after 1 s",
            )
        self._open[subject] += 1
        self._count += 1
        return subject, None

    def release(self, subject: str) -> None:
        left = self._open[subject] - 1
        if left > 0:
            self._open[subject] = left
        else:
            del self._open[subject]
        self._count -= 1

    def from_address(self, ip: str) -> int:
        """Connections open from ``ip``'s subject now (for logs and tests)."""
        return self._open.get(address_subject(ip), 0)
