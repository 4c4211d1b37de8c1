"""The master's market update (spec 3.1.6) against real Redis and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import redis

from papertrader.market.providers import ProviderError, SimulatedProvider
from papertrader.market.quote import Quote
from papertrader.master.asset_retrieval import AssetRetrieval, QuoteBook, period_start
from papertrader.store.pool import ConnectionPool
from papertrader.store.quotes import QuoteStore

SYMBOLS = ("AAPL", "MSFT")
T0 = datetime(2026, 1, 5, 14, 30, 0, 100_000, tzinfo=timezone.utc)


class BrokenProvider:
    """A provider whose API is down."""

    name = "broken"

    def fetch(
        self, symbols: Sequence[str], period_start: datetime, previous: Mapping[str, Quote]
    ) -> dict[str, Quote]:
        raise ProviderError("HTTP 503 from the quotes API")


def retrieval(
    pool: ConnectionPool,
    client: redis.Redis,
    provider: object = None,
    drains: list[int] | None = None,
    book: QuoteBook | None = None,
    after_update: Callable[[], object] | None = None,
) -> tuple[AssetRetrieval, QuoteBook]:
    book = book or QuoteBook()
    loop = AssetRetrieval(
        SYMBOLS,
        5.0,
        provider or SimulatedProvider(7),  # type: ignore[arg-type]
        book,
        QuoteStore(client),
        pool,
        after_update=(lambda: drains.append(1)) if drains is not None else after_update,
    )
    return loop, book


def bars(pool: ConnectionPool) -> list[tuple[str, datetime, Decimal, Decimal]]:
    with pool.transaction() as cur:
        cur.execute("SELECT symbol, period_start, open, close FROM asset_bars ORDER BY 2, 1")
        return list(cur.fetchall())


def test_periods_are_aligned_to_the_interval() -> None:
    assert period_start(T0, 5.0) == datetime(2026, 1, 5, 14, 30, tzinfo=timezone.utc)
    assert period_start(T0 + timedelta(seconds=4.8), 5.0) == period_start(T0, 5.0)
    assert period_start(T0, 0.3).microsecond % 100_000 == 0


def test_update_publishes_quotes_stores_bars_then_drains(
    pool: ConnectionPool, redis_client: redis.Redis
) -> None:
    drains: list[int] = []
    loop, book = retrieval(pool, redis_client, drains=drains)
    loop.tick(now=T0)
    loop.tick(now=T0 + timedelta(seconds=1))  # same period: no second bar, but a drain
    assert drains == [1, 1]

    published, updated_at = QuoteStore(redis_client).load()
    assert set(published) == set(SYMBOLS) and updated_at is not None
    assert book.snapshot().quotes == published
    assert book.prices()["AAPL"] == published["AAPL"].close
    stored = bars(pool)
    assert [(s, t) for s, t, _o, _c in stored] == [(s, period_start(T0, 5.0)) for s in SYMBOLS]


def test_a_restarted_master_continues_the_prices(
    pool: ConnectionPool, redis_client: redis.Redis
) -> None:
    first, _ = retrieval(pool, redis_client)
    first.tick(now=T0)
    before, _ = QuoteStore(redis_client).load()

    restarted, book = retrieval(pool, redis_client)
    restarted.seed()
    assert book.snapshot().quotes == before
    restarted.tick(now=T0)  # the same period again: nothing new
    assert len(bars(pool)) == 2
    restarted.tick(now=T0 + timedelta(seconds=5))
    after, _ = QuoteStore(redis_client).load()
    for symbol in SYMBOLS:
        assert after[symbol].open == before[symbol].close
    assert len(bars(pool)) == 4


def test_attack_poisoned_quotes_in_redis_never_become_fill_prices(
    pool: ConnectionPool, redis_client: redis.Redis
) -> None:
    """A price written into pt:quotes (by a worker, before ACLs stopped it) does not
    survive a master restart: the book is seeded from PostgreSQL, and the stored
    prices are written back over the poison before the first drain."""
    first, _ = retrieval(pool, redis_client)
    first.tick(now=T0)
    stored, _ = QuoteStore(redis_client).load()
    this_period = period_start(T0, 5.0)
    poison = Quote("AAPL", Decimal("0.01"), Decimal("0.01"), Decimal("0.01"),
                   Decimal("0.01"), 1, this_period)  # fmt: skip
    QuoteStore(redis_client).publish({"AAPL": poison}, T0)

    drains: list[dict[str, Decimal]] = []
    book = QuoteBook()
    restarted, _ = retrieval(
        pool, redis_client, book=book, after_update=lambda: drains.append(book.prices())
    )
    restarted.seed()
    restarted.tick(now=T0)  # the same period: no new fetch, only the drain
    assert drains == [{s: stored[s].close for s in SYMBOLS}]
    assert drains[0]["AAPL"] != Decimal("0.01")
    assert QuoteStore(redis_client).load()[0]["AAPL"] == stored["AAPL"]


def test_provider_failure_keeps_the_last_quotes(
    pool: ConnectionPool, redis_client: redis.Redis
) -> None:
    good, _ = retrieval(pool, redis_client)
    good.tick(now=T0)
    before, _ = QuoteStore(redis_client).load()

    drains: list[int] = []
    broken, book = retrieval(pool, redis_client, BrokenProvider(), drains)
    broken.seed()
    broken.tick(now=T0 + timedelta(seconds=5))
    assert book.snapshot().quotes == before
    assert QuoteStore(redis_client).load()[0] == before
    assert drains == [1]  # orders still drain at the last good prices
