"""Work the master does as orders arrive, before the interval's drain (issue 15).

The intake hands each batch it reads to the drain check's ``prepare``: the
orders' sessions are read and verified then, and the drain only asks whether
they still exist. What a user notices must not change: an order whose session
ended before the drain is refused, an order canceled while queued is canceled,
a master that dies after reading ahead applies every order once, and every
outcome reaches the worker waiting for it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from decimal import Decimal

import gevent
import gevent.event
import pytest
import redis
from drain_support import cash, new_order, outcome
from test_worker_support import wait_for

from papertrader.limits.pending_orders import PendingOrders
from papertrader.master.order_intake import OrderIntake
from papertrader.master.order_sessions import SessionCheck, mark_orders_before_sessions
from papertrader.master.transactions import drain_once
from papertrader.protocol import ErrorCode
from papertrader.store import keys, order_book
from papertrader.store.accounts import create_account
from papertrader.store.order_queue import Entry, Order, OrderQueue, Outcome
from papertrader.store.orders import Refusal
from papertrader.store.pool import ConnectionPool
from papertrader.store.sessions import Session, SessionStore

T0 = datetime(2026, 1, 5, 14, 30, tzinfo=timezone.utc)
PRICES = {"AAPL": Decimal("100.00")}
IP = "198.51.100.1"


@pytest.fixture
def sessions(redis_client: redis.Redis) -> SessionStore:
    return SessionStore(redis_client, 3600, 3600)


@pytest.fixture
def check(redis_client: redis.Redis, sessions: SessionStore) -> SessionCheck:
    mark_orders_before_sessions(redis_client)
    return SessionCheck(redis_client, sessions)


def trader(pool: ConnectionPool, sessions: SessionStore, name: str) -> Session:
    account = create_account(pool, name, f"{name}@example.com", "$2b$04$x", Decimal("1000.00"))
    return sessions.create(account.id, name, IP, False)


def placed(queue: OrderQueue, session: Session, reply: str | None = None) -> Order:
    order = new_order(
        session.account_id, "buy", 1, at=T0, client_ip=IP, reply=reply,
        session=session.session_id.hex,
    )  # fmt: skip
    queue.submit(order)
    return order


def test_an_order_whose_session_ended_after_it_was_read_ahead_is_refused(
    pool: ConnectionPool, queue: OrderQueue, sessions: SessionStore, check: SessionCheck
) -> None:
    leaving, staying = trader(pool, sessions, "leaving"), trader(pool, sessions, "staying")
    gone, kept = placed(queue, leaving), placed(queue, staying)
    intake = OrderIntake(queue, prepare=check.prepare)
    intake.catch_up()  # both sessions read and verified now, as the orders arrive
    sessions.end(leaving)  # logged out before the interval's drain
    assert drain_once(queue, pool, PRICES, now=T0, intake=intake, check=check) == 2
    refused = outcome(queue, gone)
    assert (refused.status, refused.code) == ("rejected", ErrorCode.INVALID_SESSION)
    assert cash(pool, leaving.account_id) == Decimal("1000.00")
    assert outcome(queue, kept).status == "filled"
    assert cash(pool, staying.account_id) == Decimal("900.00")


def test_an_order_read_ahead_then_canceled_while_queued_is_canceled(
    pool: ConnectionPool, queue: OrderQueue, sessions: SessionStore, check: SessionCheck
) -> None:
    session = trader(pool, sessions, "canceler")
    order = placed(queue, session)
    intake = OrderIntake(queue, prepare=check.prepare)
    found = intake.find(order.order_id)
    assert found is not None
    canceled = order_book.cancel_queued(pool, found, T0)
    assert canceled is not None and canceled.status == "canceled"
    assert drain_once(queue, pool, PRICES, now=T0, intake=intake, check=check) == 1
    assert outcome(queue, order).status == "canceled"
    assert cash(pool, session.account_id) == Decimal("1000.00")


def test_an_order_that_arrives_while_the_intake_rests_is_found_and_drained(
    pool: ConnectionPool, queue: OrderQueue, sessions: SessionStore, check: SessionCheck
) -> None:
    """The intake's reader rests between reads (``READ_PAUSE``); an order queued
    meanwhile is still one a user can ask about and cancel, and the drain takes it."""
    first, second = trader(pool, sessions, "early"), trader(pool, sessions, "resting")
    early = placed(queue, first)
    intake = OrderIntake(queue, prepare=check.prepare)
    stop = gevent.event.Event()
    reader = gevent.spawn(intake.run, stop, 100, 3600.0)  # rests an hour after a read
    try:
        wait_for(lambda: len(intake) >= 1, timeout=30, sleep=gevent.sleep)  # read the first
        late = placed(queue, second)  # arrives while the reader rests
        gevent.sleep(0.2)
        assert len(intake) == 1  # resting: the reader has not read it
        found = intake.find(late.order_id)
        assert found is not None and found.order_id == late.order_id
        assert drain_once(queue, pool, PRICES, now=T0, intake=intake, check=check) == 2
    finally:
        stop.set()
        reader.kill()
    assert outcome(queue, early).status == "filled"
    assert outcome(queue, late).status == "filled"
    assert cash(pool, second.account_id) == Decimal("900.00")


def test_a_master_that_dies_after_reading_ahead_applies_each_order_once(
    pool: ConnectionPool,
    queue: OrderQueue,
    redis_client: redis.Redis,
    sessions: SessionStore,
    check: SessionCheck,
) -> None:
    session = trader(pool, sessions, "survivor")
    orders = [placed(queue, session) for _ in range(3)]
    OrderIntake(queue, prepare=check.prepare).catch_up()  # read, then the master dies
    assert queue.pending_entries() == 3  # read but not acknowledged: the group keeps them
    restarted = SessionCheck(redis_client, sessions)  # a new master remembers nothing
    intake = OrderIntake(queue, prepare=restarted.prepare)
    assert drain_once(queue, pool, PRICES, now=T0, intake=intake, check=restarted) == 3
    assert [outcome(queue, order).status for order in orders] == ["filled"] * 3
    assert cash(pool, session.account_id) == Decimal("700.00")
    assert drain_once(queue, pool, PRICES, now=T0, intake=intake, check=restarted) == 0
    assert queue.pending_count() == 0


def test_one_workers_outcomes_reach_its_list_and_free_the_pending_cap(
    pool: ConnectionPool,
    queue: OrderQueue,
    redis_client: redis.Redis,
    sessions: SessionStore,
    check: SessionCheck,
) -> None:
    """Outcomes for one worker process's inbox go out as one push; each order stops
    counting against its account's cap in the same call."""
    session = trader(pool, sessions, "busy")
    pending = PendingOrders(redis_client, cap=10)
    inbox, other = uuid.uuid4().hex, uuid.uuid4().hex
    orders = [placed(queue, session, reply) for reply in (inbox, other, inbox, inbox)]
    for order in orders:
        assert pending.reserve(session.account_id, order.order_id)
    assert drain_once(queue, pool, PRICES, now=T0, check=check, pending=pending) == 4
    texts = redis_client.lrange(keys.order_result(inbox), 0, -1)
    got = [Outcome.from_json(text).order_id for text in texts]
    assert got == [orders[0].order_id, orders[2].order_id, orders[3].order_id]
    assert 0 < redis_client.ttl(keys.order_result(inbox)) <= 3600
    assert outcome(queue, orders[1]).status == "filled"
    assert redis_client.zcard(keys.pending_orders(session.account_id)) == 0


class _Clock:
    """A monotonic clock the test moves: the drain's deadline is checked against it."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("past_deadline", [False, True], ids=["before", "after"])
def test_orders_that_arrive_while_a_drain_runs_are_taken_until_its_deadline(
    pool: ConnectionPool, queue: OrderQueue, sessions: SessionStore, past_deadline: bool
) -> None:
    """An order placed while a drain decides is applied by the same drain while its
    deadline has not passed (answered an interval sooner); after the deadline it waits
    for the next drain, at that drain's prices, so a load faster than the drain cannot
    keep one drain (and the market update after it) going."""
    session = trader(pool, sessions, "steady")
    first = placed(queue, session)
    clock, late = _Clock(), list[Order]()

    def arrives_meanwhile(entries: Sequence[Entry]) -> dict[bytes, Refusal]:
        if not late:  # while the first drain decides its orders, another one comes
            late.append(placed(queue, session))
            clock.now += 0.6 if past_deadline else 0.1
        return {}

    taken = drain_once(
        queue, pool, PRICES, now=T0, check=arrives_meanwhile, until=100.5, clock=clock
    )  # fmt: skip
    assert outcome(queue, first).status == "filled"
    if not past_deadline:
        assert taken == 2 and outcome(queue, late[0]).price == Decimal("100.00")
        return
    assert taken == 1 and queue.wait_outcome(late[0].order_id, timeout=0.5) is None
    assert drain_once(queue, pool, {"AAPL": Decimal("90.00")}, now=T0) == 1
    later = outcome(queue, late[0])
    assert later.status == "filled" and later.price == Decimal("90.00")  # the next prices
