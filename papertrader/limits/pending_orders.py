"""The cap on orders one account may have waiting for the next drain.

Orders wait in the ``pt:orders`` stream until the master's next drain (once
per update interval). Without a cap one account could queue thousands, each
costing the drain a row and every other user some of its time. Before the
worker XADDs an order it calls :meth:`PendingOrders.reserve`: one Lua call
that adds the order id to the account's set of waiting orders only if it
holds fewer than ``max_pending_orders_per_account``; the master's drain
removes each order it decided in the same Lua call that publishes its outcome
and acknowledges it (``OrderQueue.complete``).

``pt:orders:pending:<account id>`` (sorted set: order id hex -> when it was
reserved, ms). An entry older than ``stale_seconds`` no longer counts (a
master that crashed between applying an order and releasing it must not cap
the account for good); the key expires with its last entry.
"""

from __future__ import annotations

import uuid

import redis

from papertrader.store import keys
from papertrader.store.functions import Function

# KEYS[1] = the account's set; ARGV = order id hex, cap, stale ms -> 1 reserved, 0 refused
RESERVE = Function(
    "pt_reserve_pending",
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local stale = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - stale)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], stale)
return 1
""",
)


class PendingOrders:
    """``reserve`` before queuing an order (worker); the drain releases it (master)."""

    def __init__(self, client: redis.Redis, cap: int, stale_seconds: float = 3600.0) -> None:
        self._redis = client
        self._reserve = RESERVE.bind(client)
        self.cap = cap
        self.stale_ms = int(stale_seconds * 1000)

    def reserve(self, account_id: int, order_id: uuid.UUID) -> bool:
        """True if the order may be queued (it now counts against the account's cap)."""
        return bool(
            self._reserve(
                keys=[keys.pending_orders(account_id)],
                args=[order_id.hex, self.cap, self.stale_ms],
            )
        )
