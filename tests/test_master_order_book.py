"""Limit, stop and stop-limit orders, reservations, expiry and cancels, in the master's
drain against real Redis and PostgreSQL.

What a user notices: an order waits until its price comes and then fills at the
interval's price (never worse than its limit); while it waits, what it may spend
is set aside, so orders filling together never overdraw; canceling or expiring
gives it back; a cancel racing the drain ends as one of the two, never both.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
import redis
from drain_support import new_order, outcome

from papertrader.master.order_intake import OrderIntake
from papertrader.master.trading_day import day_order_end
from papertrader.master.transactions import drain_once
from papertrader.protocol import ErrorCode
from papertrader.store import order_book
from papertrader.store.accounts import create_account
from papertrader.store.order_queue import Entry, Order, OrderQueue
from papertrader.store.pool import ConnectionPool

T0 = datetime(2026, 1, 5, 14, 30, tzinfo=timezone.utc)
DAY_END = T0 + timedelta(hours=6)


@pytest.fixture
def account(pool: ConnectionPool) -> int:
    return create_account(pool, "trader", "t@example.com", "$2b$04$x", Decimal("10000.00")).id


def order(
    account: int,
    side: str,
    quantity: int,
    order_type: str = "market",
    limit: str | None = None,
    stop: str | None = None,
    tif: str = "day",
    symbol: str = "AAPL",
    at: datetime = T0,
) -> Order:
    return new_order(
        account, side, quantity, at=at, symbol=symbol, order_type=order_type,
        limit_price=None if limit is None else Decimal(limit),
        stop_price=None if stop is None else Decimal(stop), time_in_force=tif,
    )  # fmt: skip


def drain(queue: OrderQueue, pool: ConnectionPool, price: str, at: datetime = T0) -> int:
    return drain_once(
        queue, pool, {"AAPL": Decimal(price), "MSFT": Decimal("400.00")}, now=at, day_end=DAY_END
    )


def money(pool: ConnectionPool, account: int) -> tuple[Decimal, Decimal]:
    """(cash, reserved cash)."""
    with pool.transaction() as cur:
        cur.execute("SELECT cash, reserved_cash FROM accounts WHERE id = %s", (account,))
        row = cur.fetchone()
    assert row is not None
    return Decimal(row[0]), Decimal(row[1])


def units(pool: ConnectionPool, account: int, symbol: str = "AAPL") -> tuple[int, int]:
    """(units held, units reserved)."""
    with pool.transaction() as cur:
        cur.execute(
            "SELECT quantity, reserved_quantity FROM positions WHERE account_id = %s"
            " AND symbol = %s",
            (account, symbol),
        )
        row = cur.fetchone()
    return (0, 0) if row is None else (int(row[0]), int(row[1]))


def state(pool: ConnectionPool, account: int, placed: Order) -> str:
    found = order_book.find_order(pool, account, placed.client_id)
    assert found is not None
    return found.status


def test_a_limit_buy_waits_with_its_cash_reserved_then_fills_at_the_interval_price(
    pool: ConnectionPool, queue: OrderQueue, account: int
) -> None:
    limit = order(account, "buy", 10, "limit", limit="100.00")
    queue.submit(limit)
    drain(queue, pool, "101.00")
    waiting = outcome(queue, limit)
    assert (waiting.status, waiting.reserved_cash) == ("open", Decimal("1000.00"))
    assert waiting.expires_at == DAY_END and waiting.accepted_at == T0
    assert money(pool, account) == (Decimal("10000.00"), Decimal("1000.00"))

    later = T0 + timedelta(seconds=5)
    drain(queue, pool, "100.50", later)  # still above the limit
    assert state(pool, account, limit) == "open"
    drain(queue, pool, "99.25", later + timedelta(seconds=5))  # below: fills at 99.25
    filled = order_book.find_order(pool, account, limit.client_id)
    assert filled is not None and filled.status == "filled"
    assert (filled.price, filled.amount) == (Decimal("99.25"), Decimal("992.50"))
    assert money(pool, account) == (Decimal("9007.50"), Decimal("0.00"))
    assert units(pool, account) == (10, 0)


def test_limit_and_market_orders_of_one_account_fill_in_the_same_interval(
    pool: ConnectionPool, queue: OrderQueue, account: int
) -> None:
    """The book's fill and the new market order draw on the same cash, exactly."""
    limit = order(account, "buy", 40, "limit", limit="100.00")
    queue.submit(limit)
    drain(queue, pool, "120.00")
    assert outcome(queue, limit).status == "open"  # 4000.00 reserved
    # Next interval: the price drops under the limit, and a market buy arrives that
    # the free cash (6000.00) covers only because the limit fills below its limit.
    later = T0 + timedelta(seconds=5)
    market = order(account, "buy", 61, at=later)  # 61 x 95.00 = 5795.00
    queue.submit(market)
    drain(queue, pool, "95.00", later)
    assert outcome(queue, market).status == "filled"
    assert state(pool, account, limit) == "filled"
    # 10000 - 40 x 95 - 61 x 95 = 405.00, nothing reserved any more
    assert money(pool, account) == (Decimal("405.00"), Decimal("0.00"))
    assert units(pool, account) == (101, 0)
    # A market buy the free cash does not cover is refused, the reservation untouched.
    greedy = order(account, "buy", 5, at=later + timedelta(seconds=5))
    queue.submit(greedy)
    drain(queue, pool, "95.00", later + timedelta(seconds=5))
    refused = outcome(queue, greedy)
    assert (refused.status, refused.code) == ("rejected", ErrorCode.INSUFFICIENT_CASH)


def test_open_orders_can_never_overdraw_when_they_fill_together(
    pool: ConnectionPool, queue: OrderQueue, account: int
) -> None:
    first = order(account, "buy", 60, "limit", limit="100.00")
    second = order(account, "buy", 50, "limit", limit="100.00")  # 5000 more than is free
    queue.submit(first)
    queue.submit(second)
    drain(queue, pool, "150.00")
    assert outcome(queue, first).status == "open"
    refused = outcome(queue, second)
    assert refused.code == ErrorCode.INSUFFICIENT_CASH and "reserved" in refused.reason
    drain(queue, pool, "90.00", T0 + timedelta(seconds=5))
    assert money(pool, account) == (Decimal("4600.00"), Decimal("0.00"))


def test_sells_reserve_units_and_stops_trigger_at_their_price(
    pool: ConnectionPool, queue: OrderQueue, account: int
) -> None:
    buy = order(account, "buy", 10)
    queue.submit(buy)
    drain(queue, pool, "100.00")
    assert outcome(queue, buy).status == "filled"

    stop = order(account, "sell", 6, "stop", stop="90.00", tif="gtc")
    queue.submit(stop)
    drain(queue, pool, "95.00")
    assert outcome(queue, stop).status == "open"
    assert units(pool, account) == (10, 6)
    # Only 4 units are free: a market sell of 5 is refused, naming the reservation.
    sell = order(account, "sell", 5)
    queue.submit(sell)
    drain(queue, pool, "95.00")
    refused = outcome(queue, sell)
    assert refused.code == ErrorCode.INSUFFICIENT_POSITION and "reserved" in refused.reason

    drain(queue, pool, "89.00", T0 + timedelta(seconds=5))  # stop reached: sold at 89.00
    triggered = order_book.find_order(pool, account, stop.client_id)
    assert triggered is not None and triggered.status == "filled"
    assert triggered.price == Decimal("89.00") and triggered.triggered_at is not None
    assert triggered.realized_pnl == Decimal("-66.00")  # 6 x (89 - 100)
    assert units(pool, account) == (4, 0)


def test_a_stop_limit_triggers_then_waits_for_its_limit(
    pool: ConnectionPool, queue: OrderQueue, account: int
) -> None:
    stop_limit = order(account, "buy", 10, "stop_limit", limit="105.00", stop="110.00")
    queue.submit(stop_limit)
    drain(queue, pool, "100.00")
    assert outcome(queue, stop_limit).reserved_cash == Decimal("1050.00")
    drain(queue, pool, "111.00", T0 + timedelta(seconds=5))  # triggered, above the limit
    waiting = order_book.find_order(pool, account, stop_limit.client_id)
    assert waiting is not None and waiting.status == "open" and waiting.triggered_at is not None
    drain(queue, pool, "104.00", T0 + timedelta(seconds=10))
    assert state(pool, account, stop_limit) == "filled"
    assert money(pool, account) == (Decimal("8960.00"), Decimal("0.00"))


def test_a_stop_buy_that_costs_more_than_the_free_cash_is_rejected_when_it_triggers(
    pool: ConnectionPool, queue: OrderQueue, account: int
) -> None:
    stop = order(account, "buy", 90, "stop", stop="100.00")  # reserves 9000.00
    queue.submit(stop)
    drain(queue, pool, "95.00")
    assert outcome(queue, stop).status == "open"
    drain(queue, pool, "120.00", T0 + timedelta(seconds=5))  # 90 x 120 = 10800 > 10000
    rejected = order_book.find_order(pool, account, stop.client_id)
    assert rejected is not None and rejected.status == "rejected"
    assert rejected.code == ErrorCode.INSUFFICIENT_CASH
    assert money(pool, account) == (Decimal("10000.00"), Decimal("0.00"))


def test_cancel_and_expiry_release_what_was_reserved(
    pool: ConnectionPool, queue: OrderQueue, account: int
) -> None:
    day = order(account, "buy", 10, "limit", limit="50.00")
    gtc = order(account, "buy", 10, "limit", limit="60.00", tif="gtc")
    for placed in (day, gtc):
        queue.submit(placed)
    drain(queue, pool, "100.00")
    assert money(pool, account) == (Decimal("10000.00"), Decimal("1100.00"))

    canceled = order_book.cancel_order(pool, account, gtc.order_id, T0)
    assert canceled is not None and canceled.status == "canceled"
    assert money(pool, account) == (Decimal("10000.00"), Decimal("500.00"))
    again = order_book.cancel_order(pool, account, gtc.order_id, T0)
    assert again is not None and again.status == "canceled"  # nothing released twice
    assert money(pool, account) == (Decimal("10000.00"), Decimal("500.00"))

    drain(queue, pool, "100.00", DAY_END + timedelta(seconds=1))  # past the day's end
    expired = order_book.find_order(pool, account, day.client_id)
    assert expired is not None and expired.status == "expired" and expired.decided_at
    assert money(pool, account) == (Decimal("10000.00"), Decimal("0.00"))


def test_the_same_client_order_id_twice_is_one_order(
    pool: ConnectionPool, queue: OrderQueue, account: int
) -> None:
    first = order(account, "buy", 3)
    again = Order(**{**first.__dict__, "quantity": 99, "reply": uuid.uuid4().hex})
    queue.submit(first)
    queue.submit(again)
    drain(queue, pool, "100.00")
    one, two = outcome(queue, first), outcome(queue, again)
    assert one.status == two.status == "filled" and two.quantity == 3  # the first one's terms
    assert two.replayed and not one.replayed
    assert units(pool, account) == (3, 0)
    queue.submit(Order(**{**first.__dict__, "reply": uuid.uuid4().hex}))  # a day later
    drain(queue, pool, "200.00", T0 + timedelta(days=1))
    assert units(pool, account) == (3, 0) and money(pool, account)[0] == Decimal("9700.00")


def test_too_many_open_orders_are_refused(
    pool: ConnectionPool, queue: OrderQueue, account: int
) -> None:
    placed = [order(account, "buy", 1, "limit", limit="1.00") for _ in range(4)]
    for one in placed:
        queue.submit(one)
    drain_once(queue, pool, {"AAPL": Decimal("100")}, now=T0, day_end=DAY_END, max_open=3)
    statuses = [outcome(queue, one) for one in placed]
    assert [s.status for s in statuses] == ["open", "open", "open", "rejected"]
    assert statuses[3].code == ErrorCode.TOO_MANY_OPEN_ORDERS


def test_a_cancel_racing_the_drain_is_canceled_or_filled_never_both(
    pool: ConnectionPool, queue: OrderQueue, redis_client: redis.Redis, account: int
) -> None:
    """Queued market orders canceled while the drain applies them: each ends as one."""
    placed = [order(account, "buy", 1, at=T0 + timedelta(microseconds=i)) for i in range(300)]
    for one in placed:
        queue.submit(one)
    intake = OrderIntake(queue)
    intake.catch_up()
    answers: dict[uuid.UUID, str] = {}

    def cancel_all() -> None:
        for one in reversed(placed):
            found = intake.find(one.order_id)
            if found is not None:
                got = order_book.cancel_queued(pool, found, T0)
            else:
                got = order_book.find_order(pool, account, one.client_id)
            assert got is not None
            answers[one.order_id] = got.status

    canceler = threading.Thread(target=cancel_all)
    canceler.start()
    drain_once(
        queue, pool, {"AAPL": Decimal("10.00")}, now=T0, day_end=DAY_END, intake=intake,
        chunk_size=20,
    )  # fmt: skip
    canceler.join(30)
    finals = {one.order_id: state(pool, account, one) for one in placed}
    assert set(finals.values()) <= {"filled", "canceled"}
    for one in placed:
        told = outcome(queue, one).status
        assert told == finals[one.order_id], "the worker was told something else"
        assert answers[one.order_id] == finals[one.order_id] or (
            answers[one.order_id] == "queued" and finals[one.order_id] == "filled"
        )
    filled = sum(1 for s in finals.values() if s == "filled")
    assert money(pool, account)[0] == Decimal("10000.00") - 10 * filled
    assert units(pool, account) == (filled, 0)


def test_day_orders_end_at_the_next_close() -> None:
    winter = datetime(2026, 1, 5, 15, 0, tzinfo=timezone.utc)  # 10:00 in New York
    assert day_order_end(winter) == datetime(2026, 1, 5, 21, 0, tzinfo=timezone.utc)
    evening = datetime(2026, 1, 5, 22, 0, tzinfo=timezone.utc)  # after the close
    assert day_order_end(evening) == datetime(2026, 1, 6, 21, 0, tzinfo=timezone.utc)
    summer = datetime(2026, 7, 6, 15, 0, tzinfo=timezone.utc)  # daylight saving: 20:00 UTC
    assert day_order_end(summer) == datetime(2026, 7, 6, 20, 0, tzinfo=timezone.utc)


def test_orders_a_drain_time_check_refuses_are_rejected_never_filled(
    pool: ConnectionPool, queue: OrderQueue, account: int
) -> None:
    """The hook for the master's own checks (e.g. each order's session): set-based too."""
    good, bad = order(account, "buy", 1), order(account, "buy", 2)
    queue.submit(good)
    queue.submit(bad)

    def check(entries: Sequence[Entry]) -> dict[bytes, tuple[int, str]]:
        return {
            e.stream_id: (int(ErrorCode.NOT_ALLOWED), "refused by a check")
            for e in entries
            # drain_once hands a check only well-formed entries (staged is set)
            if e.staged.order_id == bad.order_id.hex  # type: ignore[union-attr]
        }

    drain_once(queue, pool, {"AAPL": Decimal("10")}, now=T0, day_end=DAY_END, check=check)
    refused = outcome(queue, bad)
    assert (refused.status, refused.code, refused.reason) == (
        "rejected", ErrorCode.NOT_ALLOWED, "refused by a check",
    )  # fmt: skip
    assert outcome(queue, good).status == "filled"
    assert units(pool, account) == (1, 0)
