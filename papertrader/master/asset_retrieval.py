"""Assets data retrieval (spec 3.1.6): one market update per update interval.

Each interval (aligned to multiples of ``update_interval`` since the epoch, so
every bar covers one whole period) the loop asks the provider for all
configured assets at once, keeps the quotes in memory (``QuoteBook``) for the
order drain and portfolio valuation and publishes them to Redis for the
workers. Then it runs the order drain, so orders fill at the price of the
interval in which they are processed (the quotes go to Redis beside the
drain), and after it stores the bars in PostgreSQL (the orders waiting for
the interval wait for neither write).

The loop never dies: a provider error keeps the last good quotes (logged
with their age, and marked stale in ``pt:market:status``), a Redis or
database error is logged, and the next interval tries again. Each attempt's
outcome and the API requests it cost go to Redis for `pt market status`.
A provider with ``history()`` (the csv replay) has its bars backfilled into
``asset_bars`` at start.

Prices only ever flow *out* to Redis: the quote book is filled by the
provider and, at start, from the bars stored in PostgreSQL, never from
``pt:quotes``. Redis is shared with every worker, so a price found there
cannot be trusted to fill an order (issue 10); the seeded quotes are written
back over whatever ``pt:quotes`` holds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import gevent
import gevent.event
import psycopg2
import redis
from loguru import logger

from papertrader import metrics
from papertrader.market.providers import MarketProvider
from papertrader.market.quote import Quote
from papertrader.store.bars import insert_bars
from papertrader.store.history import insert_history, last_quotes
from papertrader.store.market_status import MarketStatusStore
from papertrader.store.pool import ConnectionPool, PoolTimeout
from papertrader.store.quotes import QuoteStore

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class QuoteSnapshot:
    """The quotes of one moment; never changed after it is published."""

    quotes: Mapping[str, Quote] = field(default_factory=dict)
    updated_at: datetime | None = None

    def price(self, symbol: str) -> Decimal | None:
        quote = self.quotes.get(symbol)
        return None if quote is None else quote.price


class QuoteBook:
    """The latest quotes in process memory, replaced whole by one assignment.

    Readers take ``snapshot()`` and use that object: they never see half an
    update, and no lock is needed.
    """

    def __init__(self) -> None:
        self._snapshot = QuoteSnapshot()

    def snapshot(self) -> QuoteSnapshot:
        return self._snapshot

    def publish(self, quotes: Mapping[str, Quote], updated_at: datetime) -> None:
        """New quotes replace the old ones of their symbols; other symbols keep theirs."""
        merged = {**self._snapshot.quotes, **quotes}
        self._snapshot = QuoteSnapshot(merged, updated_at)

    def prices(self) -> dict[str, Decimal]:
        """symbol -> current fill price (the close of the latest bar)."""
        return {symbol: quote.price for symbol, quote in self._snapshot.quotes.items()}


def period_start(now: datetime, interval: float) -> datetime:
    """Start of the update period containing ``now`` (exact, in whole microseconds)."""
    step = max(1, round(interval * 1_000_000))
    micros = (now - _EPOCH) // timedelta(microseconds=1)
    return _EPOCH + timedelta(microseconds=micros - micros % step)


class AssetRetrieval:
    """The retrieval loop; ``after_update`` (the order drain) runs after each interval's update."""

    def __init__(
        self,
        symbols: tuple[str, ...],
        interval: float,
        provider: MarketProvider,
        book: QuoteBook,
        quote_store: QuoteStore,
        pool: ConnectionPool,
        after_update: Callable[[], object] | None = None,
        status: MarketStatusStore | None = None,
    ) -> None:
        self.symbols = symbols
        self.interval = interval
        self._provider = provider
        self._book = book
        self._store = quote_store
        self._pool = pool
        self._after_update = after_update
        self._last_period: datetime | None = None
        self._status = status
        self._calls_reported = 0

    def backfill(self) -> int:
        """Store the provider's own history (csv replay) in asset_bars; rows already
        there are kept. Returns the rows added; a database error is logged, not fatal."""
        source = getattr(self._provider, "history", None)
        if not callable(source):
            return 0
        bars = [q for q in source() if q.symbol in self.symbols]
        try:
            added = insert_history(self._pool, bars)
        except (psycopg2.Error, PoolTimeout) as exc:
            logger.warning(
                "could not backfill the {} provider's history ({})", self._provider.name, exc
            )
            return 0
        logger.info(
            "backfilled {} of {} historical bars from the {} provider",
            added, len(bars), self._provider.name,
        )  # fmt: skip
        return added

    def _report(self, attempt: datetime, ok: bool, error: str | None) -> None:
        """The attempt's outcome and new API calls to Redis (best effort)."""
        metrics.MARKET_UPDATES.labels("ok" if ok else "failed").inc()
        if self._status is None:
            return
        calls = int(getattr(self._provider, "api_calls", 0))
        new_calls, self._calls_reported = calls - self._calls_reported, calls
        try:
            self._status.record(
                self._provider.name,
                getattr(self._provider, "api", None),
                self.interval,
                attempt,
                ok,
                error,
                max(0, new_calls),
            )
        except redis.RedisError as exc:
            logger.debug("could not record the market status ({})", exc)

    def seed(self) -> None:
        """Continue from the last bars stored in PostgreSQL (a restart), so prices do not
        jump back; then overwrite ``pt:quotes`` with them, whatever it held."""
        try:
            quotes = last_quotes(self._pool, self.symbols)
        except (psycopg2.Error, PoolTimeout) as exc:
            logger.warning("could not load the last stored bars ({}); prices start afresh", exc)
            return
        if not quotes:
            return
        now = datetime.now(timezone.utc)
        self._book.publish(quotes, now)
        latest = max(quote.time for quote in quotes.values())
        if all(quotes.get(s) is not None and quotes[s].time == latest for s in self.symbols):
            self._last_period = latest  # this period's bars exist already: do not redo them
        try:
            self._store.publish(quotes, now)
        except redis.RedisError as exc:
            logger.warning("could not publish the stored quotes to Redis ({})", exc)
        logger.info("continuing from {} stored bars of {}", len(quotes), latest.isoformat())

    def update(self, start: datetime) -> bool:
        """Fetch and publish the bars of the period starting at ``start``, and store
        them; False if the provider failed (the last good quotes stay in place)."""
        quotes = self._fetch_and_publish(start)
        if quotes is None:
            return False
        self._store_bars(start, quotes)
        return True

    def _fetch_and_publish(self, start: datetime) -> Mapping[str, Quote] | None:
        """The period's quotes from the provider, in the quote book and in Redis; None
        if the provider failed."""
        fetched = self._fetch(start)
        if fetched is None:
            return None
        self._announce(*fetched)
        return fetched[0]

    def _fetch(self, start: datetime) -> tuple[Mapping[str, Quote], datetime] | None:
        """The period's quotes from the provider, in the quote book (memory) with the
        moment they arrived; None if the provider failed (reported)."""
        snapshot = self._book.snapshot()
        previous = snapshot.quotes
        try:
            quotes = self._provider.fetch(self.symbols, start, previous)
            if not quotes:
                raise ValueError("the provider returned no quote at all")
        except Exception as exc:
            failed_at = datetime.now(timezone.utc)
            age = (
                f"now {(failed_at - snapshot.updated_at).total_seconds():.0f} s old, marked stale"
                if snapshot.updated_at is not None
                else "none yet"
            )
            logger.warning(
                "market provider {} failed for {} ({}); keeping the last quotes ({})",
                self._provider.name, start.isoformat(), exc, age,
            )  # fmt: skip
            self._report(failed_at, False, str(exc)[:300])
            return None
        now = datetime.now(timezone.utc)
        self._book.publish(quotes, now)
        missing = [s for s in self.symbols if s not in quotes]
        if missing:
            logger.warning("no quote this interval for {}", ", ".join(missing))
        return quotes, now

    def _announce(self, quotes: Mapping[str, Quote], now: datetime) -> None:
        """Record the update's success and publish the quotes to Redis for the workers."""
        try:
            self._report(now, True, None)
            try:
                self._store.publish(quotes, now)
            except redis.RedisError as exc:
                logger.warning(
                    "could not publish quotes to Redis ({}); workers keep the old ones", exc
                )
        except Exception:
            logger.exception("could not announce the quotes of {}", now.isoformat())

    def _store_bars(self, start: datetime, quotes: Mapping[str, Quote]) -> None:
        try:
            insert_bars(self._pool, quotes.values())
        except (psycopg2.Error, PoolTimeout) as exc:
            logger.warning("could not store the bars of {} ({})", start.isoformat(), exc)

    def tick(self, now: datetime | None = None) -> None:
        """One interval's work: update (once per period) then the order drain.

        Every order waiting for the interval waits for whatever runs before the
        drain (issue 15: an order is answered within the interval plus 20 ms), so
        only the provider's quotes and the in-memory quote book (the prices the
        drain fills at) come first. Telling Redis (the workers' quotes, the market
        status) goes on beside the drain, and is done before the tick ends; the bars
        are stored in PostgreSQL after the drain."""
        start = period_start(now or datetime.now(timezone.utc), self.interval)
        fetched: tuple[Mapping[str, Quote], datetime] | None = None
        announcing: gevent.Greenlet | None = None
        if start != self._last_period:
            self._last_period = start
            fetched = self._fetch(start)
            if fetched is not None:
                announcing = gevent.spawn(self._announce, *fetched)
        try:
            if self._after_update is not None:
                self._after_update()
        finally:
            if announcing is not None:
                announcing.join()
            if fetched is not None:
                self._store_bars(start, fetched[0])

    def run(self, stop: gevent.event.Event) -> None:
        """Tick at every period start until ``stop`` is set; a tick in progress finishes."""
        logger.info(
            "market updates every {:g}s for {} assets from the {} provider",
            self.interval, len(self.symbols), self._provider.name,
        )  # fmt: skip
        while not stop.is_set():
            try:
                self.tick()
            except Exception:
                logger.exception("market update failed; trying again next interval")
            stop.wait(timeout=self._seconds_to_next_period())

    def _seconds_to_next_period(self) -> float:
        now = datetime.now(timezone.utc)
        start = period_start(now, self.interval)
        following = start + timedelta(seconds=self.interval)
        return max(0.0, (following - now).total_seconds()) + 0.0005
