"""The market feed's health in Redis: what `pt market status` shows.

The master writes after every update attempt: which provider, when the last
good update was, whether the last attempt failed and why, and how many API
requests it has made (a counter, so the cost of a deployment can be checked
against the API's limits: one update interval should cost one call). The
history read counter lives beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import redis

from papertrader.store import keys


@dataclass(frozen=True)
class MarketStatus:
    provider: str | None
    api: str | None
    last_update: datetime | None  # the last successful update
    last_attempt: datetime | None
    ok: bool | None  # did the last attempt succeed (None: no attempt yet)
    last_error: str | None
    api_calls: int
    history_queries: int
    interval: float | None

    def age(self, now: datetime | None = None) -> float | None:
        """Seconds since the last good update (how old the served quotes are)."""
        if self.last_update is None:
            return None
        return ((now or datetime.now(timezone.utc)) - self.last_update).total_seconds()

    def stale(self, now: datetime | None = None) -> bool:
        """The quotes served are not this interval's: the last attempt failed, or no
        update came for two intervals (the master is stopped or stuck)."""
        if self.ok is False or self.last_update is None:
            return True
        age = self.age(now)
        return self.interval is not None and age is not None and age > 2 * self.interval + 1

    def describe(
        self, provider: str, interval: float, now: datetime | None = None
    ) -> dict[str, Any]:
        """The document `pt market status --json` and `pt status` show (``provider`` and
        ``interval`` stand in for what the master has not recorded yet)."""
        now = now or datetime.now(timezone.utc)
        age = self.age(now)
        return {
            "provider": self.provider or provider,
            "api": self.api,
            "running": self.last_attempt is not None,
            "last_update": self.last_update.isoformat() if self.last_update else None,
            "last_attempt": self.last_attempt.isoformat() if self.last_attempt else None,
            "age_seconds": None if age is None else round(age, 3),
            "stale": self.stale(now),
            "last_error": self.last_error,
            "api_calls": self.api_calls,
            "history_queries": self.history_queries,
            "update_interval": self.interval or interval,
        }


class MarketStatusStore:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    def record(
        self,
        provider: str,
        api: str | None,
        interval: float,
        attempt: datetime,
        ok: bool,
        error: str | None,
        api_calls: int,
    ) -> None:
        """One update attempt: its outcome and the API requests it cost."""
        mapping: dict[Any, Any] = {
            "provider": provider,
            "api": api or "",
            "interval": repr(interval),
            "last_attempt": attempt.isoformat(),
            "ok": "1" if ok else "0",
            "last_error": error or "",
        }
        if ok:
            mapping["last_update"] = attempt.isoformat()
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(keys.MARKET_STATUS, mapping=mapping)
        if api_calls:
            pipe.incrby(keys.MARKET_API_CALLS, api_calls)
        pipe.execute()

    def count_history_query(self, count: int = 1) -> None:
        self._redis.incrby(keys.HISTORY_QUERIES, count)

    def history_queries(self) -> int:
        return int(self._redis.get(keys.HISTORY_QUERIES) or 0)

    def read(self) -> MarketStatus:
        pipe = self._redis.pipeline(transaction=True)
        pipe.hgetall(keys.MARKET_STATUS)
        pipe.get(keys.MARKET_API_CALLS)
        pipe.get(keys.HISTORY_QUERIES)
        raw, calls, queries = pipe.execute()
        fields = {k.decode(): v.decode() for k, v in raw.items()}

        def moment(name: str) -> datetime | None:
            text = fields.get(name)
            return datetime.fromisoformat(text) if text else None

        ok_text = fields.get("ok")
        return MarketStatus(
            provider=fields.get("provider") or None,
            api=fields.get("api") or None,
            last_update=moment("last_update"),
            last_attempt=moment("last_attempt"),
            ok=None if ok_text is None else ok_text == "1",
            last_error=fields.get("last_error") or None,
            api_calls=int(calls or 0),
            history_queries=int(queries or 0),
            interval=float(fields["interval"]) if fields.get("interval") else None,
        )
