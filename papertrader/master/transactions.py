"""Assets buy & sell (spec 3.1.7): drain the order queue once per update interval.

Why this is exactly-once, even across a SIGKILL at any instruction:

1. Orders are read through the Redis consumer group, so an order read but not
   acknowledged stays pending and ``read_batch`` returns it again, first.
2. ``pt_apply_orders`` commits each chunk's cash, positions and history in one
   transaction, and an order id it decided before is not applied again: it
   returns the first outcome.
3. Only after that commit are the outcomes pushed and the entries
   acknowledged, in one MULTI (``OrderQueue.complete``).

Killed before 2 commits: nothing happened, the orders are re-read. Killed
between 2 and 3: re-read, "applied" again as a no-op with the recorded
outcome, then published. Killed after 3: gone from the queue, applied once.

Within a batch orders go in the workers' time order (``received_at``), the
stream id breaking ties, not in the order they reached Redis.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from decimal import Decimal

import psycopg2
import redis
from loguru import logger

from papertrader.protocol import ErrorCode
from papertrader.store.drain_status import DrainStatusStore
from papertrader.store.order_queue import Entry, Order, OrderQueue, Outcome
from papertrader.store.orders import AppliedOrder, apply_orders
from papertrader.store.pool import ConnectionPool, PoolTimeout

BATCH_SIZE = 5000
CHUNK_SIZE = 500
#: Errors that mean "the database is not reachable now": leave the orders pending.
UNAVAILABLE_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError, PoolTimeout)


def _sort_key(entry: Entry) -> tuple[datetime, tuple[int, int]]:
    assert entry.order is not None
    ms, _, seq = entry.stream_id.decode().partition("-")
    stamp = entry.order.received_at
    if stamp.tzinfo is None:  # a stamp without a zone would make the sort raise: UTC
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp, (int(ms), int(seq or 0))


def _outcome(order: Order, applied: AppliedOrder) -> Outcome:
    return Outcome(
        order_id=order.order_id,
        status=applied.status,
        code=applied.code,
        reason=applied.reason,
        side=order.side,
        symbol=order.symbol,
        quantity=order.quantity,
        price=applied.price,
        executed_at=applied.executed_at,
    )


def _apply_chunk(
    pool: ConnectionPool, chunk: Sequence[Entry], prices: Mapping[str, Decimal], now: datetime
) -> list[tuple[Entry, Outcome | None]]:
    """Outcomes for one chunk. A chunk PostgreSQL refuses as a whole (a value it
    cannot take) is retried order by order, so one bad order cannot block the
    queue: that order alone is rejected, unapplied, with INTERNAL."""
    orders = [
        (entry.order, prices.get(entry.order.symbol)) for entry in chunk if entry.order is not None
    ]
    try:
        applied = apply_orders(pool, orders, now)
        return [
            (entry, _outcome(order, result))
            for entry, (order, _price), result in zip(chunk, orders, applied, strict=True)
        ]
    except UNAVAILABLE_ERRORS:
        raise
    except psycopg2.Error as exc:
        if len(chunk) > 1:
            logger.warning("an order batch was refused ({}); applying its orders one by one", exc)
            return [item for entry in chunk for item in _apply_chunk(pool, [entry], prices, now)]
        order = orders[0][0]
        logger.error("order {} cannot be applied and is rejected: {}", order.order_id, exc)
        return [
            (
                chunk[0],
                Outcome(
                    order.order_id, "rejected", int(ErrorCode.INTERNAL),
                    "the order could not be processed and was not executed",
                    order.side, order.symbol, order.quantity, None, now,
                ),
            )
        ]  # fmt: skip


def drain_once(
    queue: OrderQueue,
    pool: ConnectionPool,
    prices: Mapping[str, Decimal],
    *,
    now: datetime | None = None,
    batch_size: int = BATCH_SIZE,
    chunk_size: int = CHUNK_SIZE,
) -> int:
    """Apply every queued order at ``prices`` (symbol -> fill price); returns how many
    orders got an outcome. Malformed stream entries are acknowledged and logged.

    Raises on Redis or database outages, leaving the unfinished orders pending
    for the next call.
    """
    now = now or datetime.now(timezone.utc)
    decided = 0
    while True:
        entries = queue.read_batch(count=batch_size)
        if not entries:
            return decided
        malformed = [entry for entry in entries if entry.order is None]
        for entry in malformed:
            logger.warning("dropping malformed order entry {}: {!r}", entry.stream_id, entry.raw)
        if malformed:
            queue.complete([(entry, None) for entry in malformed])
        good = sorted((entry for entry in entries if entry.order is not None), key=_sort_key)
        for start in range(0, len(good), chunk_size):
            results = _apply_chunk(pool, good[start : start + chunk_size], prices, now)
            queue.complete(results)
            decided += len(results)


class OrderDrain:
    """Runs ``drain_once`` for the retrieval loop and never lets an error escape it.

    After each drain it records when it ran, what it decided and how long it
    took (``DrainStatusStore``, read by `pt status`), or why it was postponed.
    """

    def __init__(
        self,
        queue: OrderQueue,
        pool: ConnectionPool,
        prices: Callable[[], Mapping[str, Decimal]],
        status: DrainStatusStore | None = None,
    ) -> None:
        self._queue = queue
        self._pool = pool
        self._prices = prices
        self._status = status
        self._group_ready = False

    def run(self) -> int:
        started = time.monotonic()
        at = datetime.now(timezone.utc)
        count, error = 0, None
        try:
            if not self._group_ready:
                self._queue.ensure_group()
                self._group_ready = True
            count = drain_once(self._queue, self._pool, self._prices())
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            error = f"Redis is unavailable ({exc})"
            logger.warning("order drain postponed: {}", error)
        except UNAVAILABLE_ERRORS as exc:
            error = f"the database is unavailable ({' '.join(str(exc).split())})"
            logger.warning("order drain postponed: {}", error)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            logger.exception("order drain failed; the orders stay queued for the next interval")
        elapsed = (time.monotonic() - started) * 1000
        if count:
            logger.info("applied {} orders in {:.0f} ms", count, elapsed)
        self._record(at, count, elapsed, error)
        return count

    def _record(self, at: datetime, count: int, elapsed: float, error: str | None) -> None:
        if self._status is None:
            return
        try:
            self._status.record(at, count, elapsed, error)
        except redis.RedisError:
            pass  # Redis is down: the drain itself said so already
