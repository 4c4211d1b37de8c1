"""The master's order drain (spec 3.1.7) against real Redis and PostgreSQL.

What a user notices: cash and positions change by exactly the fill, a refused
order says why, and no order is ever applied twice, even when the master dies
between applying an order and telling the worker.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, cast

import pytest
import redis
from drain_support import cash, outcome

from papertrader.limits.pending_orders import PendingOrders
from papertrader.master.retention import RejectedOrdersPurge
from papertrader.master.transactions import drain_once
from papertrader.protocol import ErrorCode
from papertrader.store import keys
from papertrader.store.accounts import create_account
from papertrader.store.order_queue import Order, OrderQueue
from papertrader.store.orders import apply_chunk
from papertrader.store.pool import ConnectionPool
from papertrader.store.portfolio import history, positions
from papertrader.store.rejected_orders import purge_rejected

if TYPE_CHECKING:
    from redis.typing import EncodableT, FieldT

T0 = datetime(2026, 1, 5, 14, 30, tzinfo=timezone.utc)
PRICES = {"AAPL": Decimal("150.25"), "MSFT": Decimal("410.10")}


@pytest.fixture
def account_id(pool: ConnectionPool) -> int:
    return create_account(pool, "trader", "t@example.com", "$2b$04$x", Decimal("100000.00")).id


def order(account_id: int, side: str, symbol: str, quantity: int, at: datetime = T0) -> Order:
    return Order(
        order_id=uuid.uuid4(),
        account_id=account_id,
        side=side,  # type: ignore[arg-type]
        symbol=symbol,
        quantity=quantity,
        received_at=at,
        client_ip="203.0.113.7",
        worker="w1",
    )


def held(pool: ConnectionPool, account_id: int) -> dict[str, tuple[int, Decimal]]:
    return {p.symbol: (p.quantity, p.average_price) for p in positions(pool, account_id)}


def test_buy_then_sell_moves_cash_and_positions_exactly(
    pool: ConnectionPool, queue: OrderQueue, account_id: int
) -> None:
    buy = order(account_id, "buy", "AAPL", 10)
    queue.submit(buy)
    assert drain_once(queue, pool, PRICES, now=T0) == 1
    filled = outcome(queue, buy)
    assert (filled.status, filled.code, filled.price) == ("filled", 0, Decimal("150.25"))
    assert filled.executed_at == T0
    assert cash(pool, account_id) == Decimal("98497.50")
    assert held(pool, account_id) == {"AAPL": (10, Decimal("150.25"))}

    sell = order(account_id, "sell", "AAPL", 4, T0 + timedelta(seconds=5))
    queue.submit(sell)
    later = T0 + timedelta(seconds=5)
    assert drain_once(queue, pool, {"AAPL": Decimal("151.10")}, now=later) == 1
    assert outcome(queue, sell).price == Decimal("151.10")
    assert cash(pool, account_id) == Decimal("99101.90")  # + 4 * 151.10
    assert held(pool, account_id) == {"AAPL": (6, Decimal("150.25"))}

    sell_rest = order(account_id, "sell", "AAPL", 6, later)
    queue.submit(sell_rest)
    drain_once(queue, pool, PRICES, now=later)
    assert outcome(queue, sell_rest).status == "filled"
    assert held(pool, account_id) == {}
    assert [(h.side, h.quantity, h.amount) for h in history(pool, account_id)] == [
        ("buy", 10, Decimal("1502.50")),
        ("sell", 4, Decimal("604.40")),
        ("sell", 6, Decimal("901.50")),
    ]
    assert queue.pending_count() == 0


def test_refused_orders_say_why_and_change_nothing(
    pool: ConnectionPool, queue: OrderQueue, account_id: int
) -> None:
    too_big = order(account_id, "buy", "MSFT", 1000)  # 410 100.00 > 100 000.00
    not_held = order(account_id, "sell", "AAPL", 1)
    unknown = order(account_id, "buy", "NOPE", 1)
    for placed in (too_big, not_held, unknown):
        queue.submit(placed)
    assert drain_once(queue, pool, PRICES, now=T0) == 3
    codes = {p.symbol: outcome(queue, p) for p in (too_big, not_held, unknown)}
    assert codes["MSFT"].code == ErrorCode.INSUFFICIENT_CASH
    assert "cash is 100000.00" in codes["MSFT"].reason
    assert codes["AAPL"].code == ErrorCode.INSUFFICIENT_POSITION
    assert codes["NOPE"].code == ErrorCode.UNKNOWN_ASSET
    assert all(o.status == "rejected" and o.price is None for o in codes.values())
    assert cash(pool, account_id) == Decimal("100000.00")
    assert held(pool, account_id) == {} and history(pool, account_id) == []


def test_crash_after_apply_before_ack_applies_nothing_twice(
    pool: ConnectionPool, queue: OrderQueue, account_id: int
) -> None:
    """The window a SIGKILL can hit: PostgreSQL committed, the outcome not published."""
    buy = order(account_id, "buy", "AAPL", 3)
    queue.submit(buy)
    (entry,) = queue.read_batch(count=10)  # the master read it...
    assert entry.order == buy
    (applied,) = apply_chunk(
        pool, [buy.staged()], PRICES, T0, T0 + timedelta(hours=8), 200
    ).outcomes()  # ...and died.
    first = applied.state()
    assert first.status == "filled" and not first.replayed
    assert queue.pending_count() == 1

    # The restarted master drains again, at a different price and time.
    restart = T0 + timedelta(minutes=1)
    assert drain_once(queue, pool, {"AAPL": Decimal("999.99")}, now=restart) == 1
    replayed = outcome(queue, buy)
    assert (replayed.status, replayed.price, replayed.executed_at) == ("filled", first.price, T0)
    assert cash(pool, account_id) == Decimal("100000.00") - 3 * PRICES["AAPL"]
    assert held(pool, account_id) == {"AAPL": (3, Decimal("150.25"))}
    assert len(history(pool, account_id)) == 1
    assert queue.pending_count() == 0
    assert drain_once(queue, pool, PRICES, now=restart) == 0


def test_same_order_queued_twice_is_applied_once_with_one_outcome(
    pool: ConnectionPool, queue: OrderQueue, account_id: int
) -> None:
    buy = order(account_id, "buy", "AAPL", 2)
    queue.submit(buy)
    queue.submit(buy)
    assert drain_once(queue, pool, PRICES, now=T0) == 2
    first, second = outcome(queue, buy), outcome(queue, buy)
    assert (first.status, first.price, first.executed_at) == ("filled", Decimal("150.25"), T0)
    assert (second.status, second.price, second.executed_at) == ("filled", Decimal("150.25"), T0)
    assert second.replayed and not first.replayed
    assert held(pool, account_id) == {"AAPL": (2, Decimal("150.25"))}


def test_orders_apply_in_worker_time_order_not_stream_order(
    pool: ConnectionPool, queue: OrderQueue, account_id: int
) -> None:
    """A sell stamped after its buy works even if it reached Redis first (another worker)."""
    sell = order(account_id, "sell", "AAPL", 5, T0 + timedelta(milliseconds=20))
    buy = order(account_id, "buy", "AAPL", 5, T0 + timedelta(milliseconds=10))
    queue.submit(sell)
    queue.submit(buy)
    drain_once(queue, pool, PRICES, now=T0 + timedelta(seconds=1))
    assert outcome(queue, buy).status == "filled"
    assert outcome(queue, sell).status == "filled"
    assert [h.side for h in history(pool, account_id)] == ["buy", "sell"]

    # With cash for one of two buys, the earlier stamp wins.
    late = order(account_id, "buy", "MSFT", 200, T0 + timedelta(seconds=3))
    early = order(account_id, "buy", "MSFT", 200, T0 + timedelta(seconds=2))
    queue.submit(late)
    queue.submit(early)
    drain_once(queue, pool, PRICES, now=T0 + timedelta(seconds=4))
    assert outcome(queue, early).status == "filled"
    assert outcome(queue, late).code == ErrorCode.INSUFFICIENT_CASH


def test_malformed_entry_is_acknowledged_and_does_not_stop_the_drain(
    pool: ConnectionPool, queue: OrderQueue, redis_client: redis.Redis, account_id: int
) -> None:
    redis_client.xadd(keys.ORDERS, {"garbage": "yes"})
    # Order.fields() is a dict[str, str]: redis-py's xadd wants dict[FieldT, EncodableT]
    fields = {**order(account_id, "buy", "AAPL", 1).fields(), "quantity": "x"}
    redis_client.xadd(keys.ORDERS, cast("dict[FieldT, EncodableT]", fields))
    good = order(account_id, "buy", "AAPL", 1)
    naive = order(account_id, "buy", "AAPL", 1, datetime(2026, 1, 5, 14, 29))  # no time zone
    queue.submit(good)
    queue.submit(naive)
    assert drain_once(queue, pool, PRICES, now=T0) == 2
    assert outcome(queue, good).status == outcome(queue, naive).status == "filled"
    assert queue.pending_count() == 0


def test_values_postgres_cannot_take_reject_only_their_order(
    pool: ConnectionPool, queue: OrderQueue, account_id: int
) -> None:
    """A bad client address or an absurd quantity must not block the queue."""
    weird_ip = Order(uuid.uuid4(), account_id, "buy", "AAPL", 1, T0, "not-an-ip", "w1")
    absurd = order(account_id, "buy", "AAPL", 10**30)
    fine = order(account_id, "buy", "AAPL", 1)
    for placed in (weird_ip, absurd, fine):
        queue.submit(placed)
    assert drain_once(queue, pool, PRICES, now=T0) == 3
    assert outcome(queue, weird_ip).status == "filled"
    assert outcome(queue, absurd).code == ErrorCode.INVALID_QUANTITY
    assert outcome(queue, fine).status == "filled"
    assert held(pool, account_id) == {"AAPL": (2, Decimal("150.25"))}


def test_the_pending_cap_is_atomic_and_the_drain_releases_it(
    pool: ConnectionPool, queue: OrderQueue, redis_client: redis.Redis, account_id: int
) -> None:
    pending = PendingOrders(redis_client, cap=3)
    placed = [order(account_id, "buy", "AAPL", 1) for _ in range(5)]
    granted = [pending.reserve(account_id, p.order_id) for p in placed]
    assert granted == [True, True, True, False, False]
    for p in placed[:3]:
        queue.submit(p)
    assert drain_once(queue, pool, PRICES, pending=pending) == 3
    assert redis_client.zcard(keys.pending_orders(account_id)) == 0
    assert pending.reserve(account_id, placed[3].order_id)  # room again after the drain


def test_a_pending_entry_left_by_a_crash_stops_counting_after_a_while(
    redis_client: redis.Redis,
) -> None:
    pending = PendingOrders(redis_client, cap=1, stale_seconds=0.05)
    assert pending.reserve(7, uuid.uuid4())
    assert not pending.reserve(7, uuid.uuid4())
    time.sleep(0.1)  # at least the stale time: never a permanent cap
    assert pending.reserve(7, uuid.uuid4())


def test_rejected_orders_are_purged_after_their_retention(
    pool: ConnectionPool, account_id: int
) -> None:
    now = datetime.now(timezone.utc)
    ids = {age: uuid.uuid4() for age in (40, 2)}
    with pool.transaction() as cur:
        for age, order_id in ids.items():
            cur.execute(
                "INSERT INTO orders (order_id, account_id, client_order_id, side, symbol,"
                " quantity, status, code, reason, received_at, decided_at)"
                " VALUES (%s, %s, %s, 'sell', 'AAPL', 5, 'rejected', %s, 'not held', %s, %s)",
                (
                    str(order_id), account_id, str(order_id),
                    int(ErrorCode.INSUFFICIENT_POSITION),
                    now - timedelta(days=age), now - timedelta(days=age),
                ),
            )  # fmt: skip
    assert RejectedOrdersPurge(pool, retention_days=30).run_once() == 1
    with pool.transaction() as cur:
        cur.execute("SELECT order_id::text FROM rejected_orders")
        assert [row[0] for row in cur.fetchall()] == [str(ids[2])]
    assert purge_rejected(pool, timedelta(days=1), batch=1) == 1  # in batches, to the end
