"""Applying queued orders in PostgreSQL through ``pt_apply_orders`` (migration 0002).

The function validates, fills and records each order of a batch in one
transaction and returns one outcome per order, in batch order. An order id it
has decided before is not applied again: its first outcome comes back with
``replayed`` set. The master may therefore call this again for orders whose
outcome it never got to publish (a crash), and nothing is applied twice.
"""

from __future__ import annotations

import ipaddress
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from papertrader.store.order_queue import Order
from papertrader.store.pool import ConnectionPool

_BIGINT = range(-(2**63), 2**63)


@dataclass(frozen=True)
class AppliedOrder:
    """What ``pt_apply_orders`` decided for one order."""

    order_id: uuid.UUID
    status: Literal["filled", "rejected"]
    code: int  # 0 when filled, else an ErrorCode value
    reason: str
    price: Decimal | None
    amount: Decimal | None
    executed_at: datetime  # when it went through (or was rejected), the first time
    replayed: bool  # decided by an earlier call; nothing changed this time


def _order_json(order: Order, price: Decimal | None, executed_at: datetime) -> dict[str, Any]:
    """One batch element. Values PostgreSQL cannot cast are neutralised here, so one
    malformed order is rejected by the function's own checks instead of aborting
    the whole batch with a cast error."""
    client_ip: str | None = None
    if order.client_ip:
        try:
            client_ip = str(ipaddress.ip_address(order.client_ip))
        except ValueError:
            client_ip = None
    return {
        "order_id": str(order.order_id),
        "account_id": order.account_id if order.account_id in _BIGINT else 0,
        "side": order.side,
        "symbol": order.symbol.replace("\x00", "\ufffd"),  # jsonb refuses NUL
        "quantity": order.quantity if order.quantity in _BIGINT else 0,
        "price": None if price is None else str(price),
        "received_at": order.received_at.isoformat(),
        "client_ip": client_ip,
        "executed_at": executed_at.isoformat(),
    }


def apply_orders(
    pool: ConnectionPool,
    orders: Sequence[tuple[Order, Decimal | None]],
    executed_at: datetime,
) -> list[AppliedOrder]:
    """Apply ``orders`` (each with its fill price, None = no price) in the given order.

    One transaction for the whole sequence: either every outcome is recorded
    or none is. Returns one ``AppliedOrder`` per input, in the same order.
    """
    if not orders:
        return []
    batch = json.dumps([_order_json(order, price, executed_at) for order, price in orders])
    with pool.transaction() as cur:
        cur.execute(
            "SELECT order_id::text, status, code, reason, price, amount, executed_at, replayed"
            " FROM pt_apply_orders(%s::jsonb)",
            (batch,),
        )
        rows = cur.fetchall()
    if len(rows) != len(orders):
        raise RuntimeError(
            f"pt_apply_orders returned {len(rows)} outcomes for {len(orders)} orders"
        )
    return [
        AppliedOrder(
            order_id=uuid.UUID(order_id),
            status="filled" if status == "filled" else "rejected",
            code=int(code),
            reason=str(reason),
            price=None if price is None else Decimal(price),
            amount=None if amount is None else Decimal(amount),
            executed_at=when,
            replayed=bool(replayed),
        )
        for order_id, status, code, reason, price, amount, when, replayed in rows
    ]
