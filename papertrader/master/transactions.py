"""Assets buy & sell (spec 3.1.7): drain the order queue once per update interval.

The master reads the order stream as orders arrive (``OrderIntake``, in
master/order_intake.py: through its consumer group, into memory, so it can tell
that an order is queued and cancel one before its drain) and applies them once
per update interval, after the prices moved:

1. the book's turn (``drain_book``): open orders of ended competitions and day
   orders past their end expire, open limit and stop orders whose condition
   holds at the interval's price fill;
2. the new orders, sorted by the workers' timestamps (the stream id breaking
   ties), split by account into lanes applied at once, each on a connection of
   its own (``_lanes``: accounts do not interact in a drain, so PostgreSQL
   applies them on as many cores; migration 0014; a take of fewer than
   ``LANE_MIN_ORDERS`` goes in one lane), and in each lane in chunks,
   the oldest first (they waited longest; ``_chunks``): each chunk is staged
   and applied by a few set-based statements (``apply_chunk``, migration 0005)
   in one transaction;
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
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from decimal import Decimal
from functools import partial
from typing import Protocol

import gevent
import psycopg2
import redis
from loguru import logger

from papertrader import metrics
from papertrader.limits.pending_orders import PendingOrders
from papertrader.master import competition_orders
from papertrader.master.order_intake import MAX_PER_DRAIN, OrderIntake
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
#: Lanes a drain applies its accounts in at once, each on a connection of its own, so
#: PostgreSQL applies them on that many cores (``_lanes``; migration 0014).
DRAIN_LANES = 2
#: Fewest orders a take must hold to go in ``DRAIN_LANES`` lanes; a smaller one goes in
#: one. Each lane pays its transactions' fixed cost, and below this the lanes' parallel
#: apply did not win it back: on 2 cores, 1,000 orders of 1,000 accounts took 108-156 ms
#: in one lane and 144-161 ms in two, 2,000 took 170-224 and 178-249 ms (issue 15).
LANE_MIN_ORDERS = 2000
#: Most open orders an account may have unless the settings say otherwise.
DEFAULT_MAX_OPEN_ORDERS = 200
#: A drain-time check: the entries (by stream id) to refuse, with (code, reason).
Check = Callable[[Sequence[Entry]], Mapping[bytes, Refusal]]
#: Share of the update interval a drain keeps taking orders that arrive while it runs;
#: past it they wait for the next drain, so the market update is never held up.
TAKE_SHARE = 0.5
#: Errors that mean "the database is not reachable now": leave the orders pending.
UNAVAILABLE_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError, PoolTimeout)


def _sort_key(entry: Entry) -> tuple[datetime, int, int]:
    """The workers' stamp, the stream id breaking ties."""
    assert entry.staged is not None
    return entry.staged.sort_key


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


def _lanes(staged: Sequence[StagedOrder], lanes: int, min_orders: int = 0) -> list[list[int]]:
    """The positions in ``staged`` (stamp order) of each lane's orders, still in stamp
    order; empty lanes left out; one lane when ``staged`` holds fewer than
    ``min_orders`` (``LANE_MIN_ORDERS``).

    An account's orders all go in one lane (chosen by its id), so they are decided in
    stamp order, one chunk after the other, as in a drain of one lane; accounts do not
    interact in a drain, so lanes apply at once (migration 0014). One lane when an
    order id comes under two accounts: only a worker that breaks how order ids are
    derived sends that (an entry without a client order id), and which of them came
    first is decided only within one transaction."""
    one = [list(range(len(staged)))] if staged else []
    if lanes <= 1 or len(staged) < min_orders:
        return one
    owner: dict[str, str] = {}
    split: list[list[int]] = [[] for _ in range(lanes)]
    for i, order in enumerate(staged):
        if owner.setdefault(order.order_id, order.account_id) != order.account_id:
            return one
        split[int(order.account_id) % lanes].append(i)
    return [part for part in split if part]


class _LaneRunner:
    """Applies a drain's lanes: each lane's orders chunk by chunk, the oldest first, each
    chunk's outcomes going out (``_publish``) while PostgreSQL applies the next."""

    def __init__(
        self,
        drainer: Drainer,
        queue: OrderQueue,
        intake: OrderIntake,
        chunk_size: int,
        pending: PendingOrders | None,
    ) -> None:
        self.drainer = drainer
        self.queue = queue
        self.intake = intake
        self.chunk_size = chunk_size
        self.pending = pending

    def run(
        self,
        entries: Sequence[Entry],
        staged: Sequence[StagedOrder],
        refusals: Sequence[Refusal | None],
    ) -> int:
        """Apply and publish every chunk of one lane; how many orders were decided."""
        decided = 0
        publishing: gevent.Greenlet | None = None
        try:
            for start, end in _chunks(len(entries), self.chunk_size):
                parts = self.drainer.apply(staged[start:end], refusals[start:end])
                # The chunk is committed: its outcomes are written and go out while
                # PostgreSQL applies the next one.
                if publishing is not None:
                    publishing.get()
                publishing = gevent.spawn(
                    _publish, self.queue, self.intake, entries[start:end], parts, self.pending
                )
                decided += end - start
        finally:
            if publishing is not None:
                publishing.get()
        return decided

    def run_split(
        self,
        entries: Sequence[Entry],
        staged: Sequence[StagedOrder],
        refusals: Sequence[Refusal | None],
        split: Sequence[Sequence[int]],
    ) -> int:
        """``run`` for each lane of ``split`` (positions in the other three), all at once,
        each in a greenlet of its own; how many orders were decided. Raises the first
        lane's error once every lane has stopped (the others' committed chunks are
        published); a lane left running when this is killed is killed too."""
        if len(split) <= 1:
            return self.run(entries, staged, refusals) if split else 0
        runs = [
            gevent.spawn(_caught, partial(self.run, [entries[i] for i in part],
                                          [staged[i] for i in part], [refusals[i] for i in part]))
            for part in split
        ]  # fmt: skip
        try:
            gevent.joinall(runs)
        except BaseException:
            gevent.killall(runs)
            raise
        results = [run.value for run in runs]
        for result in results:
            if isinstance(result, Exception):
                raise result
        return sum(result for result in results if isinstance(result, int))


def _caught(run: Callable[[], int]) -> int | Exception:
    """``run()``, its error returned rather than raised: a greenlet that dies of an error
    has gevent print it, and a database outage is expected here."""
    try:
        return run()
    except Exception as exc:
        return exc


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
    lanes: int = DRAIN_LANES,
    lane_min: int = LANE_MIN_ORDERS,
    until: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """One interval's work at ``prices`` (symbol -> price): the book's turn, then every
    queued order; returns how many queued orders got an outcome. Malformed stream
    entries are acknowledged and logged.

    ``check`` (a drain-time check of the master's own, e.g. of every order's
    session) names the entries to refuse: they are recorded as rejected with its
    code and reason, in the same set-based apply, and never filled.

    The orders of a take of at least ``lane_min`` go in ``lanes`` by account
    (``_lanes``), applied at once on as many connections of ``pool``; a smaller
    take goes in one lane.

    Orders that arrive while the drain runs are taken too (they are answered an
    interval sooner) until ``clock()`` reaches ``until``; after that they wait
    for the next drain. Without the deadline a load faster than the drain kept
    one drain going, and the market update after it waited (6.7 s of stale
    prices in one benchmark run); taking only what was queued at the start
    instead made every order that arrived during a drain wait a whole interval.

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
        staged = [routing.staged(entry) for entry in good]
        refusals = [refused.get(entry.stream_id) for entry in good]
        runner = _LaneRunner(drainer, queue, intake, chunk_size, pending)
        decided += runner.run_split(good, staged, refusals, _lanes(staged, lanes, lane_min))
        if until is not None and clock() >= until:
            break  # the newcomers wait for the next drain
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
        lanes: int = DRAIN_LANES,
        lane_min: int = LANE_MIN_ORDERS,
        take_for: float | None = None,
    ) -> None:
        """``take_for``: seconds after it starts that a drain still takes orders
        arriving while it runs (``drain_once``'s ``until``); None: no deadline."""
        self._lanes = lanes
        self._lane_min = lane_min
        self._take_for = take_for
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
                lanes=self._lanes,
                lane_min=self._lane_min,
                until=None if self._take_for is None else started + self._take_for,
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


__all__ = [
    "CHUNK_SIZE",
    "DRAIN_LANES",
    "HEAD_CHUNK_MIN",
    "LANE_MIN_ORDERS",
    "OrderDrain",
    "OrderIntake",
    "Outcome",
    "TAKE_SHARE",
    "drain_once",
]
