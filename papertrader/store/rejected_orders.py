"""Retention of rejected orders (the ``rejected_orders`` view of ``orders``, migration
0005): old ones are purged in batches.

A rejected order's row is how the drain recognises its order id if it is
drained again after a crash (and a client order id sent again), so a row must
outlive any order that can still be replayed (an order stays in the Redis
stream only until its drain is acknowledged: seconds, or as long as the
master is down). The retention is therefore at least a day
(``rejected_orders_retention_days``, 30 by default); after it, the same client
order id would be a new order. Deleting in batches keeps each transaction short.
"""

from __future__ import annotations

from datetime import timedelta

from papertrader.store.pool import ConnectionPool

PURGE_BATCH = 10_000


def purge_rejected(pool: ConnectionPool, older_than: timedelta, batch: int = PURGE_BATCH) -> int:
    """Delete rejected orders decided more than ``older_than`` ago; how many went."""
    removed = 0
    while True:
        with pool.transaction() as cur:
            cur.execute(
                "DELETE FROM rejected_orders WHERE order_id IN ("
                " SELECT order_id FROM rejected_orders WHERE decided_at < now() - %s LIMIT %s)",
                (older_than, batch),
            )
            count = cur.rowcount
        removed += count
        if count < batch:
            return removed
