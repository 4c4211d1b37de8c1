"""The drain's fast path decides exactly what the step-by-step walk decides.

Migration 0011 lets an account whose orders in a chunk all go through skip the
walk (its orders are decided by sums). What a user would notice if it were wrong:
a fill the walk would have refused, a different cash balance, average cost or
realised profit. So the same random orders, from accounts in the same starting
state, are drained twice against real PostgreSQL: once as the master does, once
with ``papertrader.drain_walk_all`` walking every account, and every outcome and
every account afterwards must be the same.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from drain_support import new_order

from papertrader.store.order_queue import Order
from papertrader.store.orders import apply_chunk
from papertrader.store.pool import ConnectionPool, PgConnection

NOW = datetime(2026, 1, 5, 15, 0, tzinfo=timezone.utc)
PRICES = {"AAPL": Decimal("123.45"), "MSFT": Decimal("310.10"), "ODD": Decimal("7.1234567")}


def _walk_all(conn: PgConnection) -> None:
    with conn.cursor() as cur:
        cur.execute("SET papertrader.drain_walk_all = on")
    conn.commit()


@pytest.fixture
def walking_pool(database_url: str) -> Iterator[ConnectionPool]:
    """A pool whose drains walk every account (the reference)."""
    walking = ConnectionPool(database_url, size=2, on_connect=_walk_all)
    try:
        yield walking
    finally:
        walking.close()


def _account(pool: ConnectionPool, name: str, cash: Decimal, held: dict[str, Any]) -> int:
    with pool.transaction() as cur:
        cur.execute(
            "INSERT INTO accounts (username, email, password_hash, cash) VALUES (%s, %s, 'x', %s)"
            " RETURNING id",
            (name, f"{name}@example.com", cash),
        )
        account = int(cur.fetchone()[0])  # type: ignore[index]
        for symbol, (quantity, average) in held.items():
            cur.execute(
                "INSERT INTO positions (account_id, symbol, quantity, average_price)"
                " VALUES (%s, %s, %s, %s)",
                (account, symbol, quantity, average),
            )
    return account


def _terms(rng: random.Random) -> dict[str, Any]:
    """Random order terms: mostly market orders, some limit, stop and stop-limit."""
    symbol = rng.choice(sorted(PRICES))
    side = rng.choice(["buy", "buy", "sell"])
    terms: dict[str, Any] = {"side": side, "symbol": symbol, "quantity": rng.randint(1, 40)}
    kind = rng.random()
    price = PRICES[symbol]
    if kind < 0.15:
        terms["order_type"] = "limit"
        terms["limit_price"] = (price * Decimal(rng.choice(["0.9", "1.1"]))).quantize(
            Decimal("0.01")
        )
    elif kind < 0.22:
        terms["order_type"] = "stop"
        terms["stop_price"] = (price * Decimal(rng.choice(["0.9", "1.1"]))).quantize(
            Decimal("0.01")
        )
        terms["time_in_force"] = "gtc"
    return terms


def _order(account: int, at: datetime, terms: dict[str, Any]) -> Order:
    return new_order(account=account, at=at, reply=None, **terms)


def _state(pool: ConnectionPool, accounts: list[int]) -> list[Any]:
    with pool.transaction() as cur:
        cur.execute(
            "SELECT a.cash, a.reserved_cash, a.realized_pnl,"
            " ARRAY(SELECT ROW(p.symbol, p.quantity, p.reserved_quantity, p.average_price)::text"
            "       FROM positions p WHERE p.account_id = a.id ORDER BY p.symbol)"
            " FROM accounts a JOIN unnest(%s::bigint[]) WITH ORDINALITY u(id, n) ON u.id = a.id"
            " ORDER BY u.n",
            (accounts,),
        )
        return [tuple(row) for row in cur.fetchall()]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_fast_path_decides_what_the_walk_decides(
    pool: ConnectionPool, walking_pool: ConnectionPool, seed: int
) -> None:
    rng = random.Random(seed)
    profiles = []
    for n in range(40):
        rich = n % 2 == 0
        cash = Decimal("100000000.00") if rich else Decimal(rng.choice(["500.00", "5000.00"]))
        held = {}
        for symbol in rng.sample(sorted(PRICES), rng.randint(0, 3)):
            # at the price (purchases keep it there) or elsewhere (the average moves)
            average = PRICES[symbol] if rng.random() < 0.5 else Decimal("100.123456")
            held[symbol] = (rng.randint(1, 400) if rich else rng.randint(1, 20), average)
        orders = [_terms(rng) for _ in range(rng.randint(1, 30))]
        profiles.append((cash, held, orders))

    outcomes: dict[str, list[Any]] = {}
    states: dict[str, list[Any]] = {}
    for label, target in (("fast", pool), ("walk", walking_pool)):
        accounts = [
            _account(pool, f"{label}{seed}x{n}", cash, held)
            for n, (cash, held, _orders) in enumerate(profiles)
        ]
        staged = []
        # interleaved across accounts, in stamp order, as workers would queue them
        for step in range(30):
            for account, (_cash, _held, orders) in zip(accounts, profiles, strict=True):
                if step < len(orders):
                    at = NOW - timedelta(seconds=1) + timedelta(microseconds=step)
                    staged.append(_order(account, at, orders[step]).staged())
        applied = apply_chunk(target, staged, PRICES, NOW, NOW + timedelta(hours=6), max_open=4)
        outcomes[label] = [tuple(row[1:8]) for row in applied.rows]
        states[label] = _state(pool, accounts)

    assert outcomes["fast"] == outcomes["walk"]
    assert states["fast"] == states["walk"]
    statuses = {row[0] for row in outcomes["fast"]}
    assert {"filled", "open", "rejected"} <= statuses  # every kind of decision was made
