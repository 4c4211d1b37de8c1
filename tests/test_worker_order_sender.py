"""Queuing orders: the pending cap and the XADD in one FUNCTION call, a batch per round trip.

What a trader notices: an order over its account's cap is refused and nothing
of it is queued (so it never fills); an accepted order is queued once and
filled once, even when hundreds of clients' orders go out in one batch or the
same order is sent twice; and a worker facing a master whose function library
is older than itself still queues orders, under the same cap.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, cast

import gevent
import pytest
import redis

from papertrader.limits.pending_orders import PendingOrders
from papertrader.master.transactions import drain_once
from papertrader.store import keys
from papertrader.store.accounts import create_account
from papertrader.store.functions import Function
from papertrader.store.order_queue import Order, OrderQueue
from papertrader.store.pool import ConnectionPool
from papertrader.worker.order_sender import OrderSender

if TYPE_CHECKING:
    # redis-py types an XRANGE reply as str or bytes, or None: these clients return bytes
    StreamEntries = list[tuple[bytes, dict[bytes, bytes]]]

T0 = datetime(2026, 1, 5, 14, 30, tzinfo=timezone.utc)
PRICES = {"AAPL": Decimal("150.25")}


def _order(account_id: int, order_id: uuid.UUID | None = None) -> Order:
    return Order(
        order_id=order_id or uuid.uuid4(),
        account_id=account_id,
        side="buy",
        symbol="AAPL",
        quantity=1,
        received_at=T0,
        client_ip="203.0.113.7",
        worker="w1",
    )


def _queued_ids(redis_client: redis.Redis) -> list[str]:
    entries = cast("StreamEntries", redis_client.xrange(keys.ORDERS))
    return [raw[b"order_id"].decode() for _, raw in entries]


@pytest.fixture
def accounts(pool: ConnectionPool) -> list[int]:
    return [
        create_account(pool, f"t{i}", f"t{i}@example.com", "$2b$04$x", Decimal("100000.00")).id
        for i in range(3)
    ]


def test_the_cap_and_the_xadd_are_one_call_that_queues_nothing_when_refused(
    queue: OrderQueue, redis_client: redis.Redis, pool: ConnectionPool, accounts: list[int]
) -> None:
    pending = PendingOrders(redis_client, cap=2)
    mine, other = accounts[0], accounts[1]
    orders = [_order(mine) for _ in range(4)] + [_order(other)]
    placed = queue.submit_many(orders, pending.queue)
    assert placed == [True, True, None, None, True]
    queued = _queued_ids(redis_client)
    assert queued == [orders[i].order_id.hex for i in (0, 1, 4)]  # each accepted one, once
    assert redis_client.zcard(keys.pending_orders(mine)) == 2  # the refused ones count not
    assert drain_once(queue, pool, PRICES, pending=pending) == 3
    assert redis_client.zcard(keys.pending_orders(mine)) == 0  # released by the drain
    assert queue.submit_many([orders[2]], pending.queue) == [True]  # room again


def test_a_burst_of_clients_is_queued_in_batches_each_order_once(
    queue: OrderQueue, redis_client: redis.Redis, pool: ConnectionPool, accounts: list[int]
) -> None:
    pending = PendingOrders(redis_client, cap=150)
    sender = OrderSender(queue, pending)
    orders = [_order(accounts[i % 2]) for i in range(400)]
    orders.insert(2, _order(accounts[0], order_id=orders[0].order_id))  # sent twice
    try:
        jobs = [gevent.spawn(sender.send, order) for order in orders]
        gevent.joinall(jobs, timeout=30, raise_error=True)
    finally:
        sender.stop()
    answers = [job.value for job in jobs]
    # Each account had room for 150 waiting orders (the same order twice counts once).
    assert answers.count(True) == 301 and answers.count(None) == 100
    assert len(_queued_ids(redis_client)) == 301
    assert drain_once(queue, pool, PRICES, pending=pending) == 301
    with pool.transaction() as cur:  # the order sent twice was applied once
        cur.execute("SELECT count(*) FROM orders WHERE status = 'filled'")
        assert cur.fetchone() == (300,)


def test_a_worker_newer_than_the_masters_functions_queues_in_two_steps(
    queue: OrderQueue, redis_client: redis.Redis, accounts: list[int]
) -> None:
    """A master that loaded an older library has no pt_queue_order: the worker's call
    meets Redis's "function not found" and falls back to the cap, then the XADD."""
    pending = PendingOrders(redis_client, cap=2)
    pending._queue = Function("pt_queue_order_of_a_later_version", "").bind(redis_client)
    sender = OrderSender(queue, pending)
    orders = [_order(accounts[0]) for _ in range(3)]
    try:
        assert [sender.send(order) for order in orders] == [True, True, None]
    finally:
        sender.stop()
    assert _queued_ids(redis_client) == [orders[0].order_id.hex, orders[1].order_id.hex]


def test_after_redis_dropped_the_senders_connection_orders_are_queued_again(
    redis_url: str, redis_client: redis.Redis, accounts: list[int]
) -> None:
    own = redis.Redis.from_url(redis_url, client_name="pt-test-order-sender")
    sender = OrderSender(OrderQueue(own), PendingOrders(own, cap=10))
    try:
        assert sender.send(_order(accounts[0])) is True
        ids = [c["id"] for c in redis_client.client_list() if c["name"] == "pt-test-order-sender"]
        assert ids  # only this test's connections: the server is shared with other tests
        for client_id in ids:
            redis_client.client_kill_filter(_id=client_id)
        assert sender.send(_order(accounts[0])) is True
    finally:
        sender.stop()
        own.close()
    assert len(_queued_ids(redis_client)) == 2
