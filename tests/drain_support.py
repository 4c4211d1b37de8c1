"""What the master's drain tests queue and read back: a worker's order, an order's
outcome, as the worker that queued it waits for it, and an account's cash. No tests
here."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from papertrader.store.accounts import get_account
from papertrader.store.order_queue import Order, OrderQueue, Outcome, Side
from papertrader.store.order_state import order_id_for
from papertrader.store.pool import ConnectionPool

#: Seconds to wait for an outcome: a bound on a wait that ends as soon as it comes.
OUTCOME_TIMEOUT = 5.0


def new_order(
    account: int,
    side: str,
    quantity: int,
    *,
    at: datetime,
    client_order_id: uuid.UUID | None = None,
    **fields: Any,
) -> Order:
    """An order as a worker queues it for ``account``: a new client order id unless one
    is given, the order id derived from both as the worker derives it, stamped ``at``;
    AAPL from 203.0.113.7 through worker w1 with an outcome list of its own, unless
    ``fields`` (any other ``Order`` field) say otherwise."""
    cid = client_order_id or uuid.uuid4()
    values = {"symbol": "AAPL", "client_ip": "203.0.113.7", "worker": "w1",
              "reply": uuid.uuid4().hex} | fields  # fmt: skip
    return Order(
        order_id=order_id_for(account, cid), account_id=account, side=cast(Side, side),
        quantity=quantity, received_at=at, client_order_id=cid, **values,
    )  # fmt: skip


def outcome(queue: OrderQueue, placed: Order) -> Outcome:
    """The outcome the master published for ``placed``, where its worker waits."""
    got = queue.wait_outcome(placed.order_id, timeout=OUTCOME_TIMEOUT, reply=placed.reply)
    assert got is not None, "the worker waiting on the order got no outcome"
    return got


def cash(pool: ConnectionPool, account_id: int) -> Decimal:
    """The account's cash in PostgreSQL."""
    account = get_account(pool, account_id)
    assert account is not None
    return account.cash
