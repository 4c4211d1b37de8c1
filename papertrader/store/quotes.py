"""Current quotes in Redis: written by the master each interval, read by every worker."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import redis

from papertrader.market.quote import Quote
from papertrader.store import keys
from papertrader.store.master_epoch import fenced_pipeline


class QuoteStore:
    """``epoch`` (the master's): quotes are written only while Redis names that epoch as the
    active master's, so a deposed master never overwrites newer prices (RedisFenced)."""

    def __init__(self, client: redis.Redis, epoch: Callable[[], int | None] | None = None) -> None:
        self._redis = client
        self._epoch = epoch

    def publish(self, quotes: Mapping[str, Quote], updated_at: datetime) -> None:
        """All quotes and the update time in one MULTI, so readers never see half an update."""
        if not quotes:
            return
        mapping = {symbol: q.to_json() for symbol, q in quotes.items()}

        def write(pipe: Any) -> None:
            pipe.hset(keys.QUOTES, mapping=mapping)
            pipe.set(keys.QUOTES_UPDATED, updated_at.isoformat())

        epoch = self._epoch() if self._epoch is not None else None
        if epoch is not None:
            fenced_pipeline(self._redis, epoch, write)
            return
        pipe = self._redis.pipeline(transaction=True)
        write(pipe)
        pipe.execute()

    def load(self) -> tuple[dict[str, Quote], datetime | None]:
        """Every quote and when they were last updated (None before the first update)."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.hgetall(keys.QUOTES)
        pipe.get(keys.QUOTES_UPDATED)
        raw, updated = pipe.execute()
        quotes = {k.decode(): Quote.from_json(v) for k, v in raw.items()}
        return quotes, datetime.fromisoformat(updated.decode()) if updated else None
