"""Reads of an account's positions and transaction history (spec 2.4.1, 3.1.7).

Writes happen only in ``pt_apply_orders`` (migration 0002), so this module
never changes a portfolio.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from papertrader.store.pool import ConnectionPool


@dataclass(frozen=True)
class Position:
    symbol: str
    quantity: int
    average_price: Decimal
    reserved_quantity: int = 0  # held by open sell orders


@dataclass(frozen=True)
class Ledger:
    """An account's money beside its cash: what open orders hold, what sells realised."""

    reserved_cash: Decimal
    realized_pnl: Decimal


def ledger(pool: ConnectionPool, account_id: int) -> Ledger:
    with pool.transaction() as cur:
        cur.execute("SELECT reserved_cash, realized_pnl FROM accounts WHERE id = %s", (account_id,))
        row = cur.fetchone()
    if row is None:
        return Ledger(Decimal("0.00"), Decimal("0.00"))
    return Ledger(Decimal(row[0]), Decimal(row[1]))


@dataclass(frozen=True)
class HistoryEntry:
    """One executed order of an account."""

    order_id: uuid.UUID
    side: str
    symbol: str
    quantity: int
    price: Decimal
    amount: Decimal
    received_at: datetime | None  # the worker's stamp (None for rows written without one)
    executed_at: datetime


def positions(pool: ConnectionPool, account_id: int) -> list[Position]:
    """The symbols an account holds, alphabetically."""
    with pool.transaction() as cur:
        cur.execute(
            "SELECT symbol, quantity, average_price, reserved_quantity FROM positions"
            " WHERE account_id = %s AND quantity > 0 ORDER BY symbol",
            (account_id,),
        )
        rows = cur.fetchall()
    return [Position(str(s), int(q), Decimal(p), int(r)) for s, q, p, r in rows]


def history(pool: ConnectionPool, account_id: int) -> list[HistoryEntry]:
    """Executed orders of an account, oldest first (ties in the order they were applied)."""
    with pool.transaction() as cur:
        cur.execute(
            "SELECT order_id::text, side, symbol, quantity, price, amount, received_at, executed_at"
            " FROM transactions WHERE account_id = %s ORDER BY executed_at, id",
            (account_id,),
        )
        rows = cur.fetchall()
    return [
        HistoryEntry(
            order_id=uuid.UUID(order_id),
            side=str(side),
            symbol=str(symbol),
            quantity=int(quantity),
            price=Decimal(price),
            amount=Decimal(amount),
            received_at=received_at,
            executed_at=executed_at,
        )
        for order_id, side, symbol, quantity, price, amount, received_at, executed_at in rows
    ]
