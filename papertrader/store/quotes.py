"""Current quotes in Redis: written by the master each interval, read by every worker."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import redis

from papertrader.market.quote import Quote
from papertrader.store import keys


class QuoteStore:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    def publish(self, quotes: Mapping[str, Quote], updated_at: datetime) -> None:
        """All quotes and the update time in one MULTI, so readers never see half an update."""
        if not quotes:
            return
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(keys.QUOTES, mapping={symbol: q.to_json() for symbol, q in quotes.items()})
        pipe.set(keys.QUOTES_UPDATED, updated_at.isoformat())
        pipe.execute()

    def load(self) -> tuple[dict[str, Quote], datetime | None]:
        """Every quote and when they were last updated (None before the first update)."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.hgetall(keys.QUOTES)
        pipe.get(keys.QUOTES_UPDATED)
        raw, updated = pipe.execute()
        quotes = {k.decode(): Quote.from_json(v) for k, v in raw.items()}
        return quotes, datetime.fromisoformat(updated.decode()) if updated else None
