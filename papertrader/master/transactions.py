"""Assets buy & sell (spec 3.1.7): drain the order queue once per update interval.

The master reads the order stream as orders arrive (``OrderIntake``: through
its consumer group, into memory, so it can tell that an order is queued and
cancel one before its drain) and applies them once per update interval, after
the prices moved:

1. the book's turn (``drain_book``): open orders of ended competitions and day
   orders past their end expire, open limit and stop orders whose condition
   holds at the interval's price fill;
2. the new orders, sorted by the workers' timestamps (the stream id breaking
   ties), in chunks, the oldest first (they waited longest; ``_chunks``): each
   chunk is staged with COPY and applied by a few
   set-based statements (``apply_chunk``, migration 0005) in one transaction;
3. after each chunk commits, its outcomes are pushed to the waiting workers
   and its entries acknowledged, in one Lua call (``OrderQueue.complete``).

Why this is exactly-once, even across a SIGKILL at any instruction: an entry
read but not acknowledged stays in the consumer group's pending list and is
read again by a restarted master; the apply is idempotent on the order id (the
primary key of ``orders``: an order id seen before changes nothing and comes
back with its current state); acknowledging comes only after the commit.
Killed before a chunk commits: nothing happened, its orders are re-read.
Killed between the commit and the acknowledgement: re-read, replayed as a
no-op with the recorded outcome, published. Killed after: applied once.

A chunk PostgreSQL refuses as a whole (a value it cannot take) is split in
halves until the order at fault is alone: it is rejected with INTERNAL, the
others are applied, still in stamp order.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from decimal import Decimal
from typing import Protocol

import gevent
import gevent.event
import psycopg2
import redis
from loguru import logger

from papertrader import metrics
from papertrader.limits.pending_orders import PendingOrders
from papertrader.master import competition_orders
from papertrader.master.trading_day import day_order_end
from papertrader.protocol import ErrorCode
from papertrader.store import keys
from papertrader.store.drain_status import DrainStatusStore
from papertrader.store.order_queue import Entry, Order, OrderQueue, Outcome
from papertrader.store.order_state import OrderState
from papertrader.store.orders import AppliedChunk, Refusal, apply_chunk, drain_book
from papertrader.store.pool import ConnectionPool, PoolTimeout
from papertrader.store.stream_order import StagedOrder

#: Orders applied per transaction: large enough that per-statement costs vanish,
#: small enough that a chunk's locks and its wait for the workers stay short.
CHUNK_SIZE = 4000
#: A drain of one chunk and at least twice this many orders applies its oldest eighth
#: (never fewer than this) as a chunk of its own first: see ``_chunks``.
HEAD_CHUNK_MIN = 100
#: Entries one read of the stream returns.
READ_COUNT = 5000
#: Most orders the intake holds in memory; beyond it they wait in the stream.
MAX_BUFFERED = 500_000
#: Most orders one drain applies; the rest wait for the next interval.
MAX_PER_DRAIN = 500_000
#: Most open orders an account may have unless the settings say otherwise.
DEFAULT_MAX_OPEN_ORDERS = 200
#: A drain-time check: the entries (by stream id) to refuse, with (code, reason).
Check = Callable[[Sequence[Entry]], Mapping[bytes, Refusal]]
#: Errors that mean "the database is not reachable now": leave the orders pending.
UNAVAILABLE_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError, PoolTimeout)


def _sort_key(entry: Entry) -> tuple[datetime, int, int]:
    """The workers' stamp, the stream id breaking ties."""
    assert entry.staged is not None
    return entry.staged.sort_key


class OrderIntake:
    """Every order read from the stream and not yet drained, in memory.

    Entries are read through the master's consumer group: once read they stay
    in its pending list until the drain acknowledges them, so a restarted
    master reads them again (its first reads ask for its own pending entries).
    ``find`` answers "is this order queued?" for order status and cancel.

    ``prepare`` (the drain check's, e.g. ``SessionCheck.prepare``) is given every
    batch as it is read, so work that does not depend on the interval's outcome
    (reading and verifying sessions) is done while orders arrive rather than at
    the tick; a failure there is left for the drain's own check.
    """

    def __init__(
        self,
        queue: OrderQueue,
        limit: int = MAX_BUFFERED,
        prepare: Callable[[Sequence[Entry]], None] | None = None,
    ) -> None:
        self._queue = queue
        self._limit = limit
        self.prepare = prepare
        self._entries: dict[bytes, Entry] = {}
        self._by_order: dict[str, Entry] = {}  # order id (hex) -> its first entry
        #: Where reading our own pending entries has got to; None once they are all read.
        self._pending_from: str | None = "0"

    def __len__(self) -> int:
        return len(self._entries)

    def poll(self, block_ms: int | None = None) -> int:
        """Read what arrived (waiting up to ``block_ms`` for something); returns how many."""
        room = self._limit - len(self._entries)
        if room <= 0:
            return 0
        count = min(READ_COUNT, room)
        got: list[Entry] = []
        if self._pending_from is not None:
            got = self._queue.read_pending(self._pending_from, count)
            if got:
                self._pending_from = got[-1].stream_id.decode()
            else:
                self._pending_from = None
        if not got:
            got = self._queue.read_new(count, block_ms)
        for entry in got:
            if entry.stream_id in self._entries:
                continue
            self._entries[entry.stream_id] = entry
            if entry.staged is not None:
                self._by_order.setdefault(entry.staged.order_id, entry)
        if got and self.prepare is not None:
            try:
                self.prepare(got)
            except redis.RedisError as exc:  # the drain's check reads them itself
                logger.debug("order intake: preparing the drain's check failed ({})", exc)
        return len(got)

    def catch_up(self) -> None:
        """Read everything queued by now (without waiting)."""
        while self.poll() and len(self._entries) < self._limit:
            pass

    def take(self, limit: int = MAX_PER_DRAIN) -> list[Entry]:
        """Up to ``limit`` entries for the drain, the oldest first (still held until
        ``forget``)."""
        self.recover()
        self.catch_up()
        taken: list[Entry] = []
        for entry in self._entries.values():
            if len(taken) >= limit:
                break
            taken.append(entry)
        return taken

    def recover(self) -> None:
        """Read our pending entries again if the group holds more than we do. A master
        deposed while frozen may read entries into the group's pending list when it
        wakes up, before it learns it is deposed (reading is not fenced; deciding
        is): they are ours to decide, and only a new reading of the list finds them."""
        if self._pending_from is None and self._queue.pending_entries() > len(self._entries):
            self._pending_from = "0"

    def forget(self, entries: Sequence[Entry]) -> None:
        """The drain acknowledged these: they are no longer queued."""
        for entry in entries:
            self._entries.pop(entry.stream_id, None)
            if entry.staged is not None and self._by_order.get(entry.staged.order_id) is entry:
                del self._by_order[entry.staged.order_id]

    def find(self, order_id: uuid.UUID) -> Order | None:
        """The queued order with this id, if it is in the stream (read up to now)."""
        entry = self._by_order.get(order_id.hex)
        if entry is None:
            self.catch_up()
            entry = self._by_order.get(order_id.hex)
        return None if entry is None else entry.order

    def queued_for(self, account_id: int, competition: str = "") -> list[Order]:
        """The queued orders of one user's account: the practice account's, or those for
        the competition named (lower case) (for its order list)."""
        self.catch_up()
        account = str(account_id)
        return [
            entry.order
            for entry in self._entries.values()
            if entry.staged is not None
            and entry.staged.account_id == account
            and entry.staged.competition.lower() == competition
            and entry.order is not None
        ]

    def run(self, stop: gevent.event.Event, block_ms: int = 1000) -> None:
        """Keep reading until ``stop``; a Redis outage is waited out."""
        failures = 0
        while not stop.is_set():
            try:
                if len(self._entries) >= self._limit:
                    stop.wait(0.1)
                    continue
                self.poll(block_ms)
                failures = 0
            except redis.RedisError as exc:
                failures += 1
                if failures == 1:
                    logger.warning("order intake: Redis is unavailable ({}); retrying", exc)
                stop.wait(min(5.0, 0.2 * 2**failures))


class Applied(Protocol):
    """A committed part of a chunk (``AppliedChunk``, or one order refused alone)."""

    def jsons(self) -> list[str]:
        """The outcome JSON of each of its orders, in order."""


class _Refused:
    """An order rejected with INTERNAL (PostgreSQL refused it alone): its outcome, built."""

    def __init__(self, text: str, side: str) -> None:
        self.text = text
        self.side = side

    def jsons(self) -> list[str]:
        return [self.text]


def _rejected_internal(staged: StagedOrder, now: datetime) -> _Refused:
    order = Order.from_staged(staged)
    reason = "the order could not be processed and was not executed"
    state = OrderState(
        order.order_id, "rejected", int(ErrorCode.INTERNAL), reason, order.side, order.symbol,
        order.quantity, None, None, client_order_id=order.client_id,
        order_type=order.order_type, limit_price=order.limit_price, stop_price=order.stop_price,
        time_in_force=order.time_in_force, received_at=order.received_at, decided_at=now,
    )  # fmt: skip
    return _Refused(state.to_json(), order.side)


def _pending_place(entry: Entry) -> tuple[str, str] | None:
    """The entry's place in its account's set of pending orders (``PendingOrders``)."""
    staged = entry.staged
    if staged is None:
        return None
    return keys.pending_orders(int(staged.account_id)), staged.order_id


def _publish(
    queue: OrderQueue,
    intake: OrderIntake,
    chunk: Sequence[Entry],
    parts: Sequence[Applied],
    pending: PendingOrders | None = None,
) -> None:
    """Tell the waiting workers and acknowledge the chunk (after its commit); with
    ``pending``, its orders stop counting against their accounts' caps in the same call."""
    texts = [text for part in parts for text in part.jsons()]
    release = _pending_place if pending is not None else None
    queue.complete(list(zip(chunk, texts, strict=True)), release)
    intake.forget(chunk)
    _count_decided(parts)


def _count_decided(parts: Sequence[Applied]) -> None:
    """papertrader_orders_decided_total by side and status (from the drain's own rows),
    counted first and added once per label pair: a labelled increment costs more than
    the rest of an order's bookkeeping here."""
    counts: Counter[tuple[str, str]] = Counter()
    for part in parts:
        if isinstance(part, AppliedChunk):
            sides = [order.side for order in part.orders]
            counts.update(zip(sides, [str(row[1]) for row in part.rows], strict=True))
        elif isinstance(part, _Refused):
            counts[(part.side, "rejected")] += 1
    for (side, status), count in counts.items():
        metrics.ORDERS_DECIDED.labels(side, status).inc(count)


class Drainer:
    """Applies chunks of orders; holds what every chunk of one drain shares."""

    def __init__(
        self,
        pool: ConnectionPool,
        prices: Mapping[str, Decimal],
        now: datetime,
        day_end: datetime,
        max_open: int,
    ) -> None:
        self.pool = pool
        self.prices = prices
        self.now = now
        self.day_end = day_end
        self.max_open = max_open

    def apply(
        self, orders: Sequence[StagedOrder], refusals: Sequence[Refusal | None] | None = None
    ) -> list[Applied]:
        """Apply ``orders``: the committed parts, in order (one unless PostgreSQL refused
        the chunk whole and it was bisected)."""
        refusals = refusals or [None] * len(orders)
        try:
            return [
                apply_chunk(
                    self.pool, orders, self.prices, self.now, self.day_end, self.max_open,
                    refusals,
                )
            ]  # fmt: skip
        except UNAVAILABLE_ERRORS:
            raise
        except psycopg2.Error as exc:
            if len(orders) > 1:
                logger.warning("an order chunk was refused ({}); splitting it", exc)
                half = len(orders) // 2
                return self.apply(orders[:half], refusals[:half]) + self.apply(
                    orders[half:], refusals[half:]
                )
            logger.error("order {} cannot be applied and is rejected: {}", orders[0].order_id, exc)
            return [_rejected_internal(orders[0], self.now)]


def _chunks(count: int, size: int) -> list[tuple[int, int]]:
    """Where the chunks of ``count`` orders (in stamp order) start and end.

    Chunks of ``size`` at most; when there is more than one, the last ``size``
    orders go as a half and two quarters: a chunk's outcomes go out while
    PostgreSQL applies the next one, except the last chunk's, which nothing
    overlaps, so a small last chunk keeps that wait short. The oldest orders are
    thus answered first, after their own chunk's commit.

    A drain that fits in one chunk (one interval's orders, the usual case) would
    answer nobody before the whole apply, so its oldest eighth (at least
    ``HEAD_CHUNK_MIN``) goes first as a chunk of its own: those orders have
    waited longest since they were placed, up to a whole interval, so the
    slowest answers of an interval are theirs, and with 1,000 orders they go
    out after about a sixth of the apply instead of all of it. The newer orders,
    which waited less, take the few milliseconds the second chunk costs."""
    if count <= size and count >= 2 * HEAD_CHUNK_MIN:
        head = max(HEAD_CHUNK_MIN, count // 8)
        return [(0, head), (head, count)]
    return _rest(count, size)


def _rest(count: int, size: int) -> list[tuple[int, int]]:
    """Chunks of ``size`` at most, the last ``size`` orders (if more) as a half and two
    quarters."""
    if count <= size:
        return [(0, count)] if count else []
    tail = size
    head = count - tail
    bounds = [(start, min(start + size, head)) for start in range(0, head, size)]
    half = (tail + 1) // 2
    quarter = (tail - half + 1) // 2
    for part in (half, quarter, tail - half - quarter):
        if part:
            bounds.append((head, head + part))
            head += part
    return bounds


def drain_once(
    queue: OrderQueue,
    pool: ConnectionPool,
    prices: Mapping[str, Decimal],
    *,
    now: datetime | None = None,
    intake: OrderIntake | None = None,
    chunk_size: int = CHUNK_SIZE,
    day_end: datetime | None = None,
    max_open: int = DEFAULT_MAX_OPEN_ORDERS,
    pending: PendingOrders | None = None,
    check: Check | None = None,
) -> int:
    """One interval's work at ``prices`` (symbol -> price): the book's turn, then every
    queued order; returns how many queued orders got an outcome. Malformed stream
    entries are acknowledged and logged.

    ``check`` (a drain-time check of the master's own, e.g. of every order's
    session) names the entries to refuse: they are recorded as rejected with its
    code and reason, in the same set-based apply, and never filled.

    Raises on Redis or database outages, leaving the unfinished orders pending
    for the next call.
    """
    now = now or datetime.now(timezone.utc)
    day_end = day_end or day_order_end(now)
    intake = intake if intake is not None else OrderIntake(queue)
    turn = drain_book(pool, prices, now)
    if turn.ended:
        logger.info("book: {} open orders of ended competitions expired", turn.ended)
    if turn.changed:
        logger.info(
            "book: {} filled, {} rejected, {} expired, {} stop orders triggered",
            turn.filled, turn.rejected, turn.expired, turn.triggered,
        )  # fmt: skip
    drainer = Drainer(pool, prices, now, day_end, max_open)
    decided = 0
    while decided < MAX_PER_DRAIN:
        entries = intake.take(MAX_PER_DRAIN - decided)
        if not entries:
            break
        malformed = [entry for entry in entries if entry.staged is None]
        for entry in malformed:
            logger.warning("dropping malformed order entry {}: {!r}", entry.stream_id, entry.raw)
        if malformed:
            queue.complete([(entry, None) for entry in malformed])
            intake.forget(malformed)
        good = sorted((entry for entry in entries if entry.staged is not None), key=_sort_key)
        refused = dict(check(good)) if check is not None else {}
        routing = competition_orders.route(pool, good, now)
        for stream_id, refusal in routing.refusals.items():
            refused.setdefault(stream_id, refusal)
        publishing: gevent.Greenlet | None = None
        try:
            for start, end in _chunks(len(good), chunk_size):
                chunk = good[start:end]
                parts = drainer.apply(
                    [routing.staged(e) for e in chunk],
                    [refused.get(e.stream_id) for e in chunk],
                )
                # The chunk is committed: its outcomes are written and go out while
                # PostgreSQL applies the next one.
                if publishing is not None:
                    publishing.get()
                publishing = gevent.spawn(_publish, queue, intake, chunk, parts, pending)
                decided += len(chunk)
        finally:
            if publishing is not None:
                publishing.get()
    return decided


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
        *,
        intake: OrderIntake | None = None,
        day_end: Callable[[datetime], datetime] = day_order_end,
        max_open: int = DEFAULT_MAX_OPEN_ORDERS,
        pending: PendingOrders | None = None,
        check: Check | None = None,
    ) -> None:
        self._pending = pending
        self._queue = queue
        self._pool = pool
        self._prices = prices
        self._status = status
        self.intake = intake if intake is not None else OrderIntake(queue)
        self._day_end = day_end
        self._max_open = max_open
        self._check = check
        self._group_ready = False

    def run(self) -> int:
        started = time.monotonic()
        at = datetime.now(timezone.utc)
        count, error = 0, None
        try:
            if not self._group_ready:
                self._queue.ensure_group()
                self._group_ready = True
            now = datetime.now(timezone.utc)
            count = drain_once(
                self._queue,
                self._pool,
                self._prices(),
                now=now,
                intake=self.intake,
                day_end=self._day_end(now),
                max_open=self._max_open,
                pending=self._pending,
                check=self._check,
            )
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
        metrics.ORDER_DRAIN_DURATION.observe(elapsed / 1000)
        if error is not None:
            metrics.ORDER_DRAIN_FAILURES.inc()
        else:
            self._measure_depth()
        if count:
            logger.info("applied {} orders in {:.0f} ms", count, elapsed)
        self._record(at, count, elapsed, error)
        return count

    def _measure_depth(self) -> None:
        try:
            metrics.ORDER_QUEUE_DEPTH.set(self._queue.pending_count())
        except redis.RedisError:
            pass

    def _record(self, at: datetime, count: int, elapsed: float, error: str | None) -> None:
        if self._status is None:
            return
        try:
            self._status.record(at, count, elapsed, error)
        except redis.RedisError:
            pass  # Redis is down: the drain itself said so already


__all__ = ["CHUNK_SIZE", "HEAD_CHUNK_MIN", "OrderDrain", "OrderIntake", "Outcome", "drain_once"]
