"""What the master's drain tests read back: an order's outcome, as the worker that
queued it waits for it, and an account's cash. No tests here."""

from __future__ import annotations

from decimal import Decimal

from papertrader.store.accounts import get_account
from papertrader.store.order_queue import Order, OrderQueue, Outcome
from papertrader.store.pool import ConnectionPool

#: Seconds to wait for an outcome: a bound on a wait that ends as soon as it comes.
OUTCOME_TIMEOUT = 5.0


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
