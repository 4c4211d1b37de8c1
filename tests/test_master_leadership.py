"""Which master is active (master/leadership.py) against a real PostgreSQL and Redis.

The leader lock admits one master at a time; a take-over raises the epoch;
a master whose epoch is no longer the active one writes nothing, in
PostgreSQL (pt_fence) or in Redis (quotes, order outcomes); a standby's
transactions are read-only; a master that stops pinging PostgreSQL for a
lease loses the lock (what a SIGSTOP does to a real master: the end-to-end
cases are in scripts/faults.py and test_faults.py).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal

import psycopg2
import psycopg2.errors
import pytest
import redis

from papertrader.market.quote import Quote
from papertrader.master.leadership import Leadership
from papertrader.store import keys, master_epoch
from papertrader.store.master_epoch import DatabaseFenced, RedisFenced
from papertrader.store.order_queue import Order, OrderQueue
from papertrader.store.pool import ConnectionPool
from papertrader.store.quotes import QuoteStore

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=timezone.utc)


def _leader(
    database_url: str, client: redis.Redis, address: str, lease: float = 10.0
) -> Leadership:
    return Leadership(database_url, client, lease, address, on_active=lambda _epoch: None)


@pytest.fixture
def masters(
    database_url: str, redis_client: redis.Redis
) -> Iterator[tuple[Leadership, Leadership]]:
    first = _leader(database_url, redis_client, "127.0.0.1:7001")
    second = _leader(database_url, redis_client, "127.0.0.1:7002")
    try:
        yield first, second
    finally:
        first.close()
        second.close()


def _acquire_soon(leader: Leadership, within: float = 30.0) -> None:
    """Take the lock once PostgreSQL has ended the previous holder's session (its backend
    releases the lock as it exits, a moment after the client closed the connection)."""
    deadline = time.monotonic() + within
    while not leader.try_acquire():
        assert time.monotonic() < deadline, "the lock was never released"
        time.sleep(0.1)


def _active(database_url: str) -> master_epoch.ActiveMaster:
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        active = master_epoch.read_active(cur)
    conn.close()
    return active


def _quote(close: str) -> Quote:
    price = Decimal(close)
    return Quote("AAPL", price, price, price, price, 100, T0)


def test_one_master_holds_the_lock_and_the_next_takes_over_with_a_higher_epoch(
    database_url: str, masters: tuple[Leadership, Leadership]
) -> None:
    first, second = masters
    assert first.try_acquire() is True
    assert first.epoch == 1
    assert second.try_acquire() is False
    assert second.epoch is None
    assert second.known is not None and second.known.address == "127.0.0.1:7001"
    first.close()  # the process died: its connection, hence its lock, is gone
    _acquire_soon(second)
    assert second.epoch == 2
    active = _active(database_url)
    assert (active.epoch, active.address) == (2, "127.0.0.1:7002")


def test_a_deposed_master_writes_nothing_to_postgresql_or_redis(
    database_url: str, redis_client: redis.Redis, masters: tuple[Leadership, Leadership]
) -> None:
    first, second = masters
    old_pool = ConnectionPool(database_url, size=2, begin=first.begin)
    try:
        assert first.try_acquire()
        QuoteStore(redis_client, epoch=lambda: first.epoch).publish({"AAPL": _quote("10")}, T0)
        with old_pool.transaction() as cur:  # while active, it writes
            cur.execute("INSERT INTO assets (symbol) VALUES ('FENCEA') ON CONFLICT DO NOTHING")
        first._drop_connection()  # lost the lock without noticing (it was paused)
        _acquire_soon(second)
        assert first.epoch == 1 and second.epoch == 2

        with pytest.raises(DatabaseFenced), old_pool.transaction() as cur:
            cur.execute("INSERT INTO assets (symbol) VALUES ('FENCEB')")
        assert first.lost.is_set()  # the first refusal ends its active life
        with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
            cur.execute("SELECT symbol FROM assets WHERE symbol LIKE 'FENCE%' ORDER BY 1")
            assert [r[0] for r in cur.fetchall()] == ["FENCEA"]
        conn.close()

        with pytest.raises(RedisFenced):
            QuoteStore(redis_client, epoch=lambda: first.epoch).publish({"AAPL": _quote("99")}, T0)
        assert QuoteStore(redis_client).load()[0]["AAPL"].close == Decimal("10")

        queue = OrderQueue(redis_client)
        queue.ensure_group()
        order = Order(uuid.uuid4(), 1, "buy", "AAPL", 1, T0, "127.0.0.1", "w1")
        queue.submit(order)
        entries = queue.read_new(10)
        assert len(entries) == 1
        with pytest.raises(RedisFenced):
            OrderQueue(redis_client, epoch=lambda: first.epoch).complete([(entries[0], '{"x":1}')])
        assert redis_client.exists(keys.order_result(order.order_id.hex)) == 0
        assert queue.pending_count() == 1  # not acknowledged: the new master decides it
        OrderQueue(redis_client, epoch=lambda: second.epoch).complete([(entries[0], '{"x":1}')])
        assert queue.pending_count() == 0
    finally:
        old_pool.close()


def test_a_standby_master_cannot_write(
    database_url: str, masters: tuple[Leadership, Leadership]
) -> None:
    first, second = masters
    assert first.try_acquire()
    assert not second.try_acquire()
    pool = ConnectionPool(database_url, size=1, begin=second.begin)
    try:
        with pool.transaction() as cur:  # reads are fine (handshakes, the worker list)
            cur.execute("SELECT count(*) FROM assets")
        with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction), pool.transaction() as cur:
            cur.execute("INSERT INTO assets (symbol) VALUES ('STANDBY')")
    finally:
        pool.close()


def test_a_master_silent_for_a_lease_loses_the_lock(
    database_url: str, redis_client: redis.Redis
) -> None:
    """What SIGSTOP does: the master holds its connection but says nothing; PostgreSQL
    ends the session after the lease (idle_session_timeout) and a standby takes over."""
    frozen = _leader(database_url, redis_client, "127.0.0.1:7001", lease=2.0)
    standby = _leader(database_url, redis_client, "127.0.0.1:7002", lease=2.0)
    try:
        assert frozen.try_acquire()
        assert not standby.try_acquire()
        _acquire_soon(standby)  # generous: the lease is 2 s
        assert standby.epoch == 2
        frozen._still_active()  # it wakes up and pings: the connection is gone
        assert frozen.lost.is_set()
    finally:
        frozen.close()
        standby.close()
