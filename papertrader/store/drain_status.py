"""The last order drain, in Redis: what `pt status` shows beside the queue depth.

The master writes one small hash after every drain (``keys.ORDERS_DRAIN``):
when it ran, how many orders it decided, how long it took, and, when it was
postponed (Redis or PostgreSQL unavailable), why. An operator can then tell
"orders are waiting because the master is stuck" from "the queue is simply
busy" without reading the master's log.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import redis

from papertrader.store import keys


@dataclass(frozen=True)
class DrainStatus:
    at: datetime | None
    applied: int
    duration_ms: float
    ok: bool
    error: str | None


class DrainStatusStore:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    def record(
        self, at: datetime, applied: int, duration_ms: float, error: str | None = None
    ) -> None:
        """One drain: its time, orders decided, duration, and why it failed (if it did)."""
        mapping: dict[Any, Any] = {
            "at": at.isoformat(),
            "applied": str(applied),
            "duration_ms": f"{duration_ms:.1f}",
            "ok": "0" if error else "1",
            "error": error or "",
        }
        self._redis.hset(keys.ORDERS_DRAIN, mapping=mapping)

    def read(self) -> DrainStatus | None:
        """The last drain, or None if the master never drained."""
        raw = cast("dict[bytes, bytes]", self._redis.hgetall(keys.ORDERS_DRAIN))
        if not raw:
            return None
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        return DrainStatus(
            at=datetime.fromisoformat(fields["at"]) if fields.get("at") else None,
            applied=int(fields.get("applied") or 0),
            duration_ms=float(fields.get("duration_ms") or 0),
            ok=fields.get("ok") == "1",
            error=fields.get("error") or None,
        )
