"""A drain applies its accounts in lanes at once (issue 15, migration 0014).

What a user would notice if lanes were wrong: an order decided against cash or
units another of the account's orders had not yet used (its orders applied out
of stamp order, or in two transactions at once), a different fill, refusal or
balance than a drain of one lane gives, or a cancel that both cancels and fills
an order. So: how orders are split (every order once, each account in one lane,
stamp order kept), the same random orders drained in one lane and in two must
come out the same, and the book lock lets chunks of two lanes go together while
a cancel still waits for them.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import psycopg2
import psycopg2.errors
import pytest
import redis
from drain_support import new_order, outcome
from hypothesis import given
from hypothesis import strategies as st

from papertrader.master.order_intake import OrderIntake
from papertrader.master.transactions import OrderDrain, _lanes, drain_once
from papertrader.store import order_book
from papertrader.store.accounts import create_account
from papertrader.store.order_queue import Order, OrderQueue
from papertrader.store.orders import apply_chunk
from papertrader.store.pool import ConnectionPool, PgConnection

T0 = datetime(2026, 1, 5, 14, 30, tzinfo=timezone.utc)
DAY_END = T0 + timedelta(hours=6)
PRICES = {"AAPL": Decimal("123.45"), "MSFT": Decimal("310.10")}


# How orders are split -------------------------------------------------------------
@given(st.lists(st.integers(1, 12), max_size=80), st.integers(1, 4))
def test_every_order_goes_once_each_account_in_one_lane_in_stamp_order(
    accounts: list[int], lanes: int
) -> None:
    staged = [
        new_order(a, "buy", 1, at=T0 + timedelta(microseconds=i)).staged()
        for i, a in enumerate(accounts)
    ]
    split = _lanes(staged, lanes)
    assert sorted(i for part in split for i in part) == list(range(len(staged)))
    assert all(part == sorted(part) and part for part in split)
    lane_of: dict[str, int] = {}
    for n, part in enumerate(split):
        for i in part:
            assert lane_of.setdefault(staged[i].account_id, n) == n, "an account in two lanes"
    assert len(split) <= max(1, lanes)


def test_an_order_id_under_two_accounts_keeps_the_drain_in_one_lane() -> None:
    one = Order(uuid.uuid4(), 1, "buy", "AAPL", 1, T0, None, "w1")
    two = Order(one.order_id, 2, "buy", "AAPL", 1, T0 + timedelta(microseconds=1), None, "w1")
    other = new_order(4, "buy", 1, at=T0)  # the other lane of two
    assert _lanes([one.staged(), two.staged(), other.staged()], 2) == [[0, 1, 2]]
    assert len(_lanes([one.staged(), other.staged()], 2)) == 2


def test_a_take_smaller_than_the_lane_minimum_goes_in_one_lane() -> None:
    staged = [new_order(account, "buy", 1, at=T0).staged() for account in (3, 4, 5, 6)]
    assert _lanes(staged, 2, min_orders=5) == [[0, 1, 2, 3]]
    assert _lanes(staged, 2, min_orders=4) == [[1, 3], [0, 2]]


def test_the_first_of_two_accounts_sending_one_order_id_gets_it_the_other_is_told(
    pool: ConnectionPool, queue: OrderQueue
) -> None:
    first = create_account(pool, "first", "f@example.com", "$2b$04$x", Decimal("1000.00")).id
    second = create_account(pool, "second", "s@example.com", "$2b$04$x", Decimal("1000.00")).id
    one = Order(uuid.uuid4(), first, "buy", "AAPL", 1, T0, None, "w1", reply=uuid.uuid4().hex)
    two = Order(one.order_id, second, "buy", "AAPL", 1, T0 + timedelta(microseconds=1), None,
                "w1", reply=uuid.uuid4().hex)  # fmt: skip
    queue.submit(two)  # stream order is not stamp order
    queue.submit(one)
    assert drain_once(queue, pool, PRICES, now=T0, day_end=DAY_END, lanes=2, lane_min=0) == 2
    assert outcome(queue, one).status == "filled"
    refused = outcome(queue, two)
    assert (refused.status, refused.reason) == (
        "rejected",
        "the order id belongs to another account",
    )


# The same orders in one lane and in two ---------------------------------------------
def _book(pool: ConnectionPool, prefix: str, count: int) -> list[int]:
    """Accounts with little cash, so many orders are refused and accounts are walked."""
    return [
        create_account(
            pool,
            f"{prefix}{i}",
            f"{prefix}{i}@example.com",
            "$2b$04$x",
            Decimal("250.00") + 100 * (i % 4),
        ).id  # fmt: skip
        for i in range(count)
    ]


def _orders(accounts: list[int], seed: int) -> list[Order]:
    rng = random.Random(seed)
    out = []
    for i in range(240):
        account = accounts[rng.randrange(len(accounts))]
        at = T0 + timedelta(microseconds=i)
        side = "buy" if rng.random() < 0.6 else "sell"
        if rng.random() < 0.7:
            out.append(new_order(account, side, rng.randint(1, 3), at=at))
        else:
            limit = Decimal("120.00") if side == "buy" else Decimal("125.00")
            out.append(new_order(account, side, rng.randint(1, 2), at=at, order_type="limit",
                                 limit_price=limit))  # fmt: skip
    return out


def _state(pool: ConnectionPool, accounts: list[int]) -> list[tuple[object, ...]]:
    with pool.transaction() as cur:
        cur.execute(
            "SELECT a.cash, a.reserved_cash, a.realized_pnl, p.quantity, p.reserved_quantity,"
            " p.average_price FROM accounts a LEFT JOIN positions p ON p.account_id = a.id"
            " WHERE a.id = ANY(%s) ORDER BY array_position(%s, a.id)",
            (accounts, accounts),
        )
        return [tuple(row) for row in cur.fetchall()]


@pytest.mark.parametrize("seed", [1, 2])
def test_two_lanes_decide_every_order_as_one_lane_does(
    pool: ConnectionPool, queue: OrderQueue, seed: int
) -> None:
    decided = {}
    for lanes in (1, 2):
        accounts = _book(pool, f"l{lanes}s{seed}x", 9)
        placed = _orders(accounts, seed)
        for one in placed:
            queue.submit(one)
        # chunks of 7: every account's orders span several chunks of its lane
        assert drain_once(queue, pool, PRICES, now=T0, day_end=DAY_END, chunk_size=7,
                          lanes=lanes, lane_min=0) == len(placed)  # fmt: skip
        # a second interval, at another price: the book the first left fills or waits
        assert drain_once(queue, pool, {"AAPL": Decimal("119.00")}, now=T0 + timedelta(minutes=1),
                          day_end=DAY_END, lanes=lanes, lane_min=0) == 0  # fmt: skip
        told = [outcome(queue, one) for one in placed]
        decided[lanes] = (
            [(o.status, o.code, o.reason, o.amount, o.realized_pnl, o.reserved_cash) for o in told],
            _state(pool, accounts),
        )
    statuses = {row[0] for row in decided[1][0]}
    assert {"filled", "rejected", "open"} <= statuses, "the orders must exercise the walk"
    assert decided[2] == decided[1]


# The book lock --------------------------------------------------------------------
@pytest.fixture
def other_lane(database_url: str) -> Iterator[psycopg2.extensions.connection]:
    """A transaction holding the book lock as a drain chunk of another lane does."""
    conn = psycopg2.connect(database_url)
    with conn.cursor() as cur:
        cur.execute("SELECT pt_lock_book_shared()")
    try:
        yield conn
    finally:
        conn.rollback()
        conn.close()


def _statement_timeout(conn: PgConnection) -> None:
    with conn.cursor() as cur:
        cur.execute("SET statement_timeout = '30s'")
    conn.commit()


def test_a_chunk_goes_while_another_lanes_chunk_is_in_flight(
    database_url: str, pool: ConnectionPool, other_lane: psycopg2.extensions.connection
) -> None:
    account = create_account(pool, "lane", "lane@example.com", "$2b$04$x", Decimal("1000.00")).id
    placed = new_order(account, "buy", 2, at=T0).staged()
    # Were chunks still exclusive, this would wait for the other lane's commit: the
    # statement timeout turns that wait into a failure instead of a hang.
    timed = ConnectionPool(database_url, size=1, on_connect=_statement_timeout)
    try:
        applied = apply_chunk(timed, [placed], PRICES, T0, DAY_END, 200)
    finally:
        timed.close()
    assert applied.rows[0][1] == "filled"


def test_a_cancel_waits_for_the_chunks_in_flight(
    pool: ConnectionPool, other_lane: psycopg2.extensions.connection
) -> None:
    account = create_account(pool, "wait", "wait@example.com", "$2b$04$x", Decimal("1000.00")).id
    with pool.transaction() as cur:
        cur.execute("SET LOCAL lock_timeout = '200ms'")
        with pytest.raises(psycopg2.errors.LockNotAvailable):
            cur.execute("SELECT pt_cancel_all_orders(%s, %s)", (account, T0))


def test_cancels_racing_a_drain_of_two_lanes_are_canceled_or_filled_never_both(
    pool: ConnectionPool, queue: OrderQueue, redis_client: redis.Redis
) -> None:
    accounts = [
        create_account(pool, f"race{i}", f"race{i}@example.com", "$2b$04$x", Decimal("5000.00")).id
        for i in range(2)
    ]  # consecutive ids: one in each lane
    placed = [
        new_order(accounts[i % 2], "buy", 1, at=T0 + timedelta(microseconds=i)) for i in range(300)
    ]
    for one in placed:
        queue.submit(one)
    intake = OrderIntake(queue)
    intake.catch_up()

    def cancel_all() -> None:
        for one in reversed(placed):
            found = intake.find(one.order_id)
            if found is not None:
                order_book.cancel_queued(pool, found, T0)

    canceler = threading.Thread(target=cancel_all)
    canceler.start()
    drain_once(queue, pool, {"AAPL": Decimal("10.00")}, now=T0, day_end=DAY_END, intake=intake,
               chunk_size=20, lanes=2, lane_min=0)  # fmt: skip
    canceler.join(30)
    for account in accounts:
        mine = [one for one in placed if one.account_id == account]
        finals = {}
        for one in mine:
            found = order_book.find_order(pool, account, one.client_id)
            assert found is not None
            finals[one.order_id] = found.status
            assert outcome(queue, one).status == found.status, "the worker was told otherwise"
        assert set(finals.values()) <= {"filled", "canceled"}
        filled = sum(1 for status in finals.values() if status == "filled")
        with pool.transaction() as cur:
            cur.execute("SELECT cash FROM accounts WHERE id = %s", (account,))
            assert cur.fetchone()[0] == Decimal("5000.00") - 10 * filled  # type: ignore[index]


def _lock_timeout(conn: PgConnection) -> None:
    with conn.cursor() as cur:
        cur.execute("SET lock_timeout = '300ms'")
    conn.commit()


def test_lanes_that_cannot_reach_the_book_postpone_the_drain_and_lose_nothing(
    database_url: str,
    pool: ConnectionPool,
    queue: OrderQueue,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Both lanes fail (the book lock is held elsewhere past their lock timeout): the
    drain is postponed, nothing is applied or told, and the next drain applies every
    order once."""
    accounts = [
        create_account(pool, f"out{i}", f"out{i}@example.com", "$2b$04$x", Decimal("1000.00")).id
        for i in range(2)
    ]
    placed = [
        new_order(accounts[i % 2], "buy", 1, at=T0 + timedelta(microseconds=i)) for i in range(6)
    ]
    for one in placed:
        queue.submit(one)
    holder = psycopg2.connect(database_url)
    timed = ConnectionPool(database_url, size=4, on_connect=_lock_timeout)

    def hold_the_book(entries: object) -> dict[bytes, tuple[int, str]]:
        # after the book's turn, before the lanes: a cancel holding the book lock
        with holder.cursor() as cur:
            cur.execute("SELECT pt_lock_book()")
        return {}

    try:
        drain = OrderDrain(queue, timed, lambda: PRICES, check=hold_the_book, lanes=2, lane_min=0)
        assert drain.run() == 0
        holder.rollback()
        for one in placed:
            assert queue.wait_outcome(one.order_id, timeout=0.1, reply=one.reply) is None
        with pool.transaction() as cur:
            cur.execute("SELECT count(*) FROM orders WHERE account_id = ANY(%s)", (accounts,))
            assert cur.fetchone()[0] == 0  # type: ignore[index]
        again = OrderDrain(queue, timed, lambda: PRICES, intake=drain.intake, lanes=2, lane_min=0)
        assert again.run() == len(placed)
    finally:
        holder.close()
        timed.close()
    assert [outcome(queue, one).status for one in placed] == ["filled"] * len(placed)
    with pool.transaction() as cur:
        cur.execute("SELECT cash FROM accounts WHERE id = ANY(%s) ORDER BY id", (accounts,))
        assert [row[0] for row in cur.fetchall()] == [
            Decimal("1000.00") - 3 * Decimal("123.45")
        ] * 2
    assert "Traceback" not in capfd.readouterr().err
