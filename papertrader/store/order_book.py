"""Reading and canceling orders in PostgreSQL (the ``orders`` table, migration 0005).

Reads are plain SELECTs; cancels go through ``pt_cancel_order``,
``pt_cancel_all_orders`` and ``pt_cancel_queued``, which take the book lock the
drain takes, so a cancel and a drain never both decide one order.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from papertrader.store.order_queue import Order
from papertrader.store.order_state import OrderState, order_id_for
from papertrader.store.pool import ConnectionPool

#: The columns an OrderState is built from, in order.
_COLUMNS = (
    "order_id, status, code, reason, side, symbol, quantity, price, executed_at,"
    " client_order_id, order_type, limit_price, stop_price, time_in_force, amount, realized_pnl,"
    " reserved_cash, reserved_quantity, received_at, accepted_at, triggered_at, decided_at,"
    " expires_at"
)
#: Most orders one list returns.
MAX_LIST = 1000


def _state(row: tuple[Any, ...], replayed: bool = False) -> OrderState:
    (order_id, status, code, reason, side, symbol, quantity, price, executed_at,
     client_order_id, order_type, limit_price, stop_price, time_in_force, amount, realized,
     reserved_cash, reserved_quantity, received_at, accepted_at, triggered_at, decided_at,
     expires_at) = row  # fmt: skip
    return OrderState(
        order_id=uuid.UUID(str(order_id)),
        status=str(status),
        code=int(code),
        reason=str(reason),
        side=str(side),
        symbol=str(symbol),
        quantity=int(quantity),
        price=None if price is None else Decimal(price),
        executed_at=executed_at,
        client_order_id=uuid.UUID(str(client_order_id)),
        order_type=str(order_type),
        limit_price=None if limit_price is None else Decimal(limit_price),
        stop_price=None if stop_price is None else Decimal(stop_price),
        time_in_force=str(time_in_force),
        amount=None if amount is None else Decimal(amount),
        realized_pnl=None if realized is None else Decimal(realized),
        reserved_cash=Decimal(reserved_cash),
        reserved_quantity=int(reserved_quantity),
        received_at=received_at,
        accepted_at=accepted_at,
        triggered_at=triggered_at,
        decided_at=decided_at,
        expires_at=expires_at,
        replayed=replayed,
    )


def queued_state(order: Order) -> OrderState:
    """The state of an order still in the stream: queued, since the worker's stamp."""
    stamp = order.received_at
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return OrderState(
        order_id=order.order_id,
        status="queued",
        code=0,
        reason="",
        side=order.side,
        symbol=order.symbol,
        quantity=order.quantity,
        price=None,
        executed_at=None,
        client_order_id=order.client_id,
        order_type=order.order_type,
        limit_price=order.limit_price,
        stop_price=order.stop_price,
        time_in_force=order.time_in_force,
        received_at=stamp,
    )


def order_ids(account_id: int, some_id: uuid.UUID) -> tuple[uuid.UUID, uuid.UUID]:
    """The order ids an id given by a user may mean: the order of that client order
    id, or that order id itself (shown in the history)."""
    return order_id_for(account_id, some_id), some_id


def find_order(pool: ConnectionPool, account_id: int, some_id: uuid.UUID) -> OrderState | None:
    """The account's order with this client order id or order id, or None; an order
    of one of its competition accounts (migration 0009) is the account's too."""
    derived, plain = order_ids(account_id, some_id)
    with pool.transaction() as cur:
        cur.execute(
            f"SELECT {_COLUMNS} FROM orders"  # noqa: S608 - fixed column list
            " WHERE order_id IN (%s, %s) AND (account_id = %s OR account_id IN"
            " (SELECT id FROM accounts WHERE owner_id = %s))"
            " ORDER BY order_id = %s DESC LIMIT 1",
            (str(derived), str(plain), account_id, account_id, str(derived)),
        )
        row = cur.fetchone()
    return None if row is None else _state(row)


def list_orders(
    pool: ConnectionPool, account_id: int, open_only: bool, limit: int = MAX_LIST
) -> list[OrderState]:
    """The account's orders, newest first (open ones only if asked)."""
    where = "account_id = %s AND status = 'open'" if open_only else "account_id = %s"
    with pool.transaction() as cur:
        cur.execute(
            f"SELECT {_COLUMNS} FROM orders WHERE {where}"  # noqa: S608 - fixed text
            " ORDER BY received_at DESC NULLS LAST, order_id LIMIT %s",
            (account_id, min(max(limit, 1), MAX_LIST)),
        )
        rows = cur.fetchall()
    return [_state(row) for row in rows]


def cancel_order(
    pool: ConnectionPool, account_id: int, order_id: uuid.UUID, now: datetime
) -> OrderState | None:
    """Cancel the account's open order ``order_id``; returns its state afterwards
    (canceled, or whatever it was), None if the account has no such order."""
    with pool.transaction() as cur:
        # The order's own account: the one given, or one of its competition accounts.
        cur.execute(
            f"SELECT {_COLUMNS} FROM pt_cancel_order("  # noqa: S608
            "(SELECT o.account_id FROM orders o WHERE o.order_id = %s AND (o.account_id = %s"
            " OR o.account_id IN (SELECT id FROM accounts WHERE owner_id = %s))), %s, %s)",
            (str(order_id), account_id, account_id, str(order_id), now),
        )
        row = cur.fetchone()
    return None if row is None else _state(row)


def cancel_all_orders(pool: ConnectionPool, account_id: int, now: datetime) -> int:
    """Cancel every open order of the account; returns how many."""
    with pool.transaction() as cur:
        cur.execute("SELECT pt_cancel_all_orders(%s, %s)", (account_id, now))
        row = cur.fetchone()
    assert row is not None
    return int(row[0])


def cancel_queued(pool: ConnectionPool, order: Order, now: datetime) -> OrderState | None:
    """Record a queued order as canceled before the drain reaches it; returns its
    state afterwards (canceled, or what the drain decided if it got there first)."""
    stamp = order.received_at
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    with pool.transaction() as cur:
        cur.execute(
            f"SELECT {_COLUMNS} FROM pt_cancel_queued("  # noqa: S608
            "%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                str(order.order_id), order.account_id, str(order.client_id), order.side,
                order.symbol, order.quantity, order.order_type, order.limit_price,
                order.stop_price, order.time_in_force, stamp, order.client_ip, order.worker, now,
            ),
        )  # fmt: skip
        row = cur.fetchone()
    return None if row is None else _state(row)
