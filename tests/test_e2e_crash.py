"""A master killed with SIGKILL in the middle of an order drain loses and repeats nothing.

Thousands of orders are queued at once (the way workers queue them), plus a
few from real clients waiting on a worker; the master is killed while it is
working through them, then restarted. Afterwards every queued order has
exactly one outcome in PostgreSQL (a transaction or a rejection), every
account's cash and positions equal what its transactions imply, and the
clients that were waiting got the outcome PostgreSQL recorded.
"""

from __future__ import annotations

import random
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import psycopg2
import pytest
import redis
from test_e2e_support import (
    Servers,
    account_id,
    expected_holdings,
    new_user,
    queue_orders,
    running,
)

from papertrader.client import ClientError, Fill
from papertrader.protocol import ErrorCode
from papertrader.store import keys
from papertrader.store.order_queue import Order, Side

ACCOUNTS = 20
QUEUED_ORDERS = 6000
SYMBOLS = ("AAPL", "MSFT", "NVDA")


@pytest.fixture
def servers(tmp_path: Path, redis_url: str, database_url: str) -> Iterator[Servers]:
    with running(Servers(tmp_path, redis_url, database_url, workers=1)) as started:
        started.wait_quotes()
        yield started


def _random_orders(accounts: list[int], count: int, sessions: dict[int, str]) -> list[Order]:
    """Orders as a worker queues them: each names its account's live session (the master
    checks it at the drain and would refuse a sessionless one as an attack)."""
    rng = random.Random(7)
    orders = []
    for _ in range(count):
        side: Side = "buy" if rng.random() < 0.6 else "sell"
        account = rng.choice(accounts)
        orders.append(
            Order(
                order_id=uuid.uuid4(),
                account_id=account,
                side=side,
                symbol=rng.choice(SYMBOLS),
                quantity=rng.randint(1, 5),
                received_at=datetime.now(timezone.utc),
                client_ip="127.0.0.1",
                worker="worker-1",
                session=sessions[account],
            )
        )
    return orders


def _wait_drained(servers: Servers, redis_url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while _queue_length(redis_url):
        assert time.monotonic() < deadline, f"the master left orders queued\n{servers.logs()}"
        time.sleep(0.1)


def _snapshot(database_url: str) -> tuple[object, ...]:
    conn = psycopg2.connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM transactions")
            filled = cur.fetchone()
            cur.execute("SELECT count(*) FROM rejected_orders")
            rejected = cur.fetchone()
            cur.execute("SELECT id, cash FROM accounts ORDER BY id")
            cash = cur.fetchall()
            cur.execute("SELECT * FROM positions ORDER BY account_id, symbol")
            positions = cur.fetchall()
    finally:
        conn.close()
    return filled, rejected, cash, positions


def _queue_length(redis_url: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.xlen(keys.ORDERS))
    finally:
        client.close()


def test_sigkill_mid_drain_applies_every_order_exactly_once(
    servers: Servers, redis_url: str, database_url: str
) -> None:
    names: list[str] = []
    sessions: dict[int, str] = {}
    for _ in range(ACCOUNTS):
        with servers.client() as client:
            names.append(new_user(client, "k"))
            assert client.session_id is not None
            sessions[account_id(database_url, names[-1])] = client.session_id.hex
    accounts = [account_id(database_url, name) for name in names]

    # Real clients with orders in flight when the master dies: logged in first
    # (logins need the master), they send their orders while it is paused.
    clients = 5
    waiting: dict[str, Fill | ClientError] = {}
    errors: list[BaseException] = []
    logged_in = threading.Barrier(clients + 1)
    go = threading.Event()

    def client_order(index: int) -> None:
        try:
            with servers.client(timeout=120) as client:
                name = new_user(client, f"w{index}_")
                logged_in.wait(timeout=60)
                go.wait(timeout=60)
                try:
                    waiting[name] = client.buy("AAPL", 1 + index)
                except ClientError as exc:
                    waiting[name] = exc
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client_order, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    logged_in.wait(timeout=60)

    # Pause the master so the whole backlog lands in one drain, then let it go
    # and kill it once it has worked through part of the queue.
    master = servers.procs["master"].popen
    assert master is not None
    master.send_signal(signal.SIGSTOP)
    try:
        go.set()
        orders = _random_orders(accounts, QUEUED_ORDERS, sessions)
        queue_orders(redis_url, orders)
        queued = {order.order_id for order in orders}
        deadline = time.monotonic() + 30
        while _queue_length(redis_url) < QUEUED_ORDERS + clients:
            assert time.monotonic() < deadline, "client orders never reached the queue"
            time.sleep(0.02)
    finally:
        master.send_signal(signal.SIGCONT)
    total = QUEUED_ORDERS + clients

    remaining = total
    deadline = time.monotonic() + 30
    while remaining == total:
        assert time.monotonic() < deadline, f"the master never drained\n{servers.logs()}"
        time.sleep(0.002)
        remaining = _queue_length(redis_url)
    servers.kill("master", signal.SIGKILL)
    remaining_at_kill = _queue_length(redis_url)
    assert 0 < remaining_at_kill < total, "the kill did not land in the middle of the drain"

    servers.restart_master()
    _wait_drained(servers, redis_url)
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, f"{errors}\n{servers.logs()}"

    conn = psycopg2.connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT order_id::text FROM transactions")
            filled = [uuid.UUID(r[0]) for r in cur.fetchall()]
            cur.execute("SELECT order_id::text FROM rejected_orders")
            rejected = [uuid.UUID(r[0]) for r in cur.fetchall()]
            decided = filled + rejected
            assert len(decided) == len(set(decided)), "an order was decided twice"
            client_ids: set[uuid.UUID] = set()
            for outcome in waiting.values():
                assert outcome.order_id is not None, outcome  # every one was queued
                client_ids.add(outcome.order_id)
            assert set(decided) == queued | client_ids, "an order was lost or invented"
            assert len(decided) == total
            assert filled and rejected  # the mix exercised both outcomes
            cur.execute(
                "SELECT count(*) FROM rejected_orders WHERE code IN (%s, %s)",
                (int(ErrorCode.SESSION_MISMATCH), int(ErrorCode.INVALID_SESSION)),
            )
            assert cur.fetchone() == (0,), "orders refused for their session: the test's own"

            # Each waiting client got exactly what PostgreSQL recorded.
            for name, outcome in waiting.items():
                if isinstance(outcome, Fill):
                    cur.execute(
                        "SELECT price, quantity FROM transactions WHERE order_id = %s",
                        (str(outcome.order_id),),
                    )
                    assert cur.fetchone() == (outcome.price, outcome.quantity), name
                else:
                    assert outcome.order_id in rejected, (name, outcome)

            # Cash and positions are exactly what each account's history implies.
            cur.execute("SELECT id, cash FROM accounts")
            for account, cash in cur.fetchall():
                cur.execute(
                    "SELECT side, symbol, quantity, amount FROM transactions"
                    " WHERE account_id = %s ORDER BY id",
                    (account,),
                )
                history = [
                    {"side": s, "symbol": sym, "quantity": int(q), "amount": Decimal(a)}
                    for s, sym, q, a in cur.fetchall()
                ]
                want_cash, want_positions = expected_holdings(history)
                assert cash == want_cash, account
                cur.execute(
                    "SELECT symbol, quantity FROM positions WHERE account_id = %s", (account,)
                )
                assert {s: int(q) for s, q in cur.fetchall()} == want_positions, account
                assert cash >= 0
    finally:
        conn.close()

    # A master killed after PostgreSQL committed a chunk but before it acknowledged
    # the entries finds them again on restart. Queue decided orders again: they
    # must change nothing.
    before = _snapshot(database_url)
    queue_orders(redis_url, random.Random(3).sample(orders, 500))
    _wait_drained(servers, redis_url)
    assert _snapshot(database_url) == before
