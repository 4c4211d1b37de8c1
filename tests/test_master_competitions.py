"""Competition orders in the master's drain, against real Redis and PostgreSQL.

Exactly-once holds for a competition account as for a practice account: the
same client order id queued twice (two workers, a retry, a replay after a
crash) is one order, filled once in the competition account; the practice
account never moves. Open orders of a competition that has ended expire and
give their reserved cash back, and nothing fills after the end.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from drain_support import cash, new_order, outcome

from papertrader.master.transactions import drain_once
from papertrader.protocol import ErrorCode
from papertrader.store import competitions
from papertrader.store.accounts import create_account
from papertrader.store.order_queue import Order, OrderQueue
from papertrader.store.pool import ConnectionPool
from papertrader.store.portfolio import ledger, positions

T0 = datetime(2026, 1, 5, 14, 30, tzinfo=timezone.utc)
PRICES = {"AAPL": Decimal("150.25"), "MSFT": Decimal("410.10")}
PRACTICE = Decimal("100000.00")
CLASS = Decimal("5000.00")


@pytest.fixture
def member(pool: ConnectionPool) -> tuple[int, int]:
    """(the user's account, their account in "Class 7B": T0 - 1 day to T0 + 1 hour)."""
    user = create_account(pool, "student", "s@example.com", "$2b$04$x", PRACTICE).id
    created = competitions.create(
        pool, "Class 7B", T0 - timedelta(days=1), T0 + timedelta(hours=1), CLASS, ("AAPL",),
        True, None,
    )  # fmt: skip
    assert competitions.join(pool, created, user)
    account = competitions.member_account(pool, created.id, user)
    assert account is not None
    return user, account


def ticket(user: int, client_id: uuid.UUID, quantity: int, **terms: object) -> Order:
    return new_order(
        user, "buy", quantity, at=T0, client_order_id=client_id, competition="class 7b", **terms
    )


def test_one_client_order_id_twice_and_a_replay_fill_once_in_the_competition_account(
    pool: ConnectionPool, queue: OrderQueue, member: tuple[int, int]
) -> None:
    user, account = member
    cid = uuid.uuid4()
    first, second = ticket(user, cid, 4), ticket(user, cid, 4)  # two workers, one order
    queue.submit(first)
    queue.submit(second)
    assert drain_once(queue, pool, PRICES, now=T0) == 2
    a, b = outcome(queue, first), outcome(queue, second)
    assert (a.status, a.price, b.status, b.price) == ("filled", PRICES["AAPL"], "filled", a.price)
    assert b.replayed and not a.replayed
    cost = 4 * PRICES["AAPL"]
    assert cash(pool, account) == CLASS - cost
    assert [(p.symbol, p.quantity) for p in positions(pool, account)] == [("AAPL", 4)]
    assert cash(pool, user) == PRACTICE and positions(pool, user) == []

    # The same ticket a day later (the competition has ended since): its recorded fill.
    later = ticket(user, cid, 4)
    queue.submit(later)
    assert drain_once(queue, pool, {"AAPL": Decimal("999.99")}, now=T0 + timedelta(days=1)) == 1
    again = outcome(queue, later)
    assert (again.status, again.price, again.executed_at) == ("filled", PRICES["AAPL"], T0)
    assert cash(pool, account) == CLASS - cost


def test_refusals_name_the_rule_and_change_nothing(
    pool: ConnectionPool, queue: OrderQueue, member: tuple[int, int]
) -> None:
    user, account = member
    msft = dataclasses.replace(ticket(user, uuid.uuid4(), 1), symbol="MSFT")
    late = ticket(user, uuid.uuid4(), 1)
    stranger = create_account(pool, "other", "o@example.com", "$2b$04$x", PRACTICE).id
    outsider = ticket(stranger, uuid.uuid4(), 1)
    for placed in (msft, outsider):
        queue.submit(placed)
    drain_once(queue, pool, PRICES, now=T0)
    assert outcome(queue, msft).code == ErrorCode.ASSET_NOT_ALLOWED
    assert outcome(queue, outsider).code == ErrorCode.NOT_A_MEMBER
    queue.submit(late)
    drain_once(queue, pool, PRICES, now=T0 + timedelta(hours=2))
    refused = outcome(queue, late)
    assert (refused.status, refused.code) == ("rejected", ErrorCode.COMPETITION_CLOSED)
    assert "has ended" in refused.reason
    assert cash(pool, account) == CLASS and positions(pool, account) == []


def test_open_orders_expire_at_the_end_and_give_their_cash_back(
    pool: ConnectionPool, queue: OrderQueue, member: tuple[int, int]
) -> None:
    user, account = member
    waiting = ticket(
        user, uuid.uuid4(), 10, order_type="limit", limit_price=Decimal("100.00"),
        time_in_force="gtc",
    )  # fmt: skip
    queue.submit(waiting)
    drain_once(queue, pool, PRICES, now=T0)
    assert outcome(queue, waiting).status == "open"
    assert ledger(pool, account).reserved_cash == Decimal("1000.00")
    # After the end the price falls below the limit: the order does not fill, it expires.
    drain_once(queue, pool, {"AAPL": Decimal("90.00")}, now=T0 + timedelta(hours=2))
    assert ledger(pool, account).reserved_cash == Decimal("0.00")
    assert cash(pool, account) == CLASS and positions(pool, account) == []
    with pool.transaction() as cur:
        cur.execute(
            "SELECT status, reason FROM orders WHERE order_id = %s", (str(waiting.order_id),)
        )
        assert cur.fetchone() == ("expired", "the competition has ended")
