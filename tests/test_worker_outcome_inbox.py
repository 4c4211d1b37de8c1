"""A worker process's outcome inbox against real Redis, PostgreSQL and the master's drain.

What a trader notices: among many orders waiting on one worker process, each
client is answered with its own order's outcome, however the drain orders
them; an answer nobody waits for any more never reaches the wrong client; and
when Redis is gone the waiting clients are told at once (their outcome is
unknown) rather than left hanging.
"""

from __future__ import annotations

import socket
import uuid
from datetime import datetime, timezone
from decimal import Decimal

import pytest
import redis

from papertrader.master.transactions import drain_once
from papertrader.store.accounts import create_account
from papertrader.store.order_queue import Order, OrderQueue
from papertrader.store.pool import ConnectionPool
from papertrader.worker.outcome_inbox import OutcomeInbox

T0 = datetime(2026, 1, 5, 14, 30, tzinfo=timezone.utc)
PRICES = {"AAPL": Decimal("150.25")}


def _order(account_id: int, quantity: int, reply: str, order_id: uuid.UUID | None = None) -> Order:
    return Order(
        order_id=order_id or uuid.uuid4(),
        account_id=account_id,
        side="buy",
        symbol="AAPL",
        quantity=quantity,
        received_at=T0,
        client_ip="203.0.113.7",
        worker="w1",
        reply=reply,
    )


@pytest.fixture
def account_id(pool: ConnectionPool) -> int:
    return create_account(pool, "trader", "t@example.com", "$2b$04$x", Decimal("100000.00")).id


def test_each_waiting_client_gets_its_own_orders_outcome(
    queue: OrderQueue, redis_client: redis.Redis, pool: ConnectionPool, account_id: int
) -> None:
    inbox = OutcomeInbox(redis_client)
    orders = [_order(account_id, quantity, inbox.reply) for quantity in range(1, 31)]
    # The same order sent twice through this process: both clients are answered.
    orders.append(_order(account_id, 1, inbox.reply, order_id=orders[0].order_id))

    waiting = []
    for order in orders:  # as each client's greenlet does: listen, then queue
        waiting.append((order, inbox.expect(order.order_id)))
        queue.submit(order)
    assert inbox.waiting == len(orders)
    drain_once(queue, pool, PRICES, now=T0)
    for order, expected in reversed(waiting):
        outcome = expected.get(timeout=30)
        assert outcome is not None, f"order {order.order_id} got no outcome"
        assert (outcome.order_id, outcome.status) == (order.order_id, "filled")
        assert outcome.quantity == order.quantity
    assert inbox.waiting == 0
    inbox.stop()


def test_an_outcome_nobody_waits_for_goes_to_nobody(
    queue: OrderQueue, redis_client: redis.Redis, pool: ConnectionPool, account_id: int
) -> None:
    inbox = OutcomeInbox(redis_client)
    abandoned = _order(account_id, 5, inbox.reply)
    expected = inbox.expect(abandoned.order_id)
    queue.submit(abandoned)
    expected.cancel()  # its client gave up before the drain
    drain_once(queue, pool, PRICES, now=T0)

    later = _order(account_id, 7, inbox.reply)
    expected = inbox.expect(later.order_id)
    queue.submit(later)
    drain_once(queue, pool, PRICES, now=T0)
    outcome = expected.get(timeout=30)
    assert outcome is not None and outcome.order_id == later.order_id
    assert outcome.quantity == 7
    inbox.stop()


def test_waiting_clients_are_told_when_redis_is_gone() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing listens here once it is closed
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=2)
    inbox = OutcomeInbox(client)
    first, second = inbox.expect(uuid.uuid4()), inbox.expect(uuid.uuid4())
    for expected in (first, second):
        with pytest.raises(redis.ConnectionError):
            expected.get(timeout=30)
    assert inbox.waiting == 0
