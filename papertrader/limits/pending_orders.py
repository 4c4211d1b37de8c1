"""The cap on orders one account may have waiting for the next drain.

Orders wait in the ``pt:orders`` stream until the master's next drain (once
per update interval). Without a cap one account could queue thousands, each
costing the drain a row and every other user some of its time. A worker
queues an order with :meth:`PendingOrders.queue`: one FUNCTION call
(``pt_queue_order``) that adds the order id to the account's set of waiting
orders only if it holds fewer than ``max_pending_orders_per_account`` and, in
the same atomic step, ``XADD``s the order: one round trip, and a refused
order queues nothing. The master's drain removes each order it decided in the
same Lua call that publishes its outcome and acknowledges it
(``OrderQueue.complete``). ``pt_reserve_pending`` (the cap alone,
:meth:`reserve`) stays in the library for workers older than
``pt_queue_order``, and is what a worker falls back to while the master's
library is older than itself.

``pt:orders:pending:<account id>`` (sorted set: order id hex -> when it was
reserved, ms). An entry older than ``stale_seconds`` no longer counts (a
master that crashed between applying an order and releasing it must not cap
the account for good); the key expires with its last entry.
"""

from __future__ import annotations

import itertools
import uuid

import redis
from redis.client import Pipeline

from papertrader.store import keys
from papertrader.store.functions import Function
from papertrader.store.order_queue import Order

#: The cap's two steps, shared by both functions: KEYS[1] = the account's set;
#: ARGV[1..3] = order id hex, cap, stale ms. The check returns 0 (refused) from the
#: function; the count adds the order.
_CHECK_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local stale = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - stale)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
"""
_COUNT_LUA = """
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], stale)
"""
# -> 1 reserved, 0 refused
RESERVE = Function("pt_reserve_pending", _CHECK_LUA + _COUNT_LUA + "return 1")
# ARGV[4] = the order stream, then the entry's field/value pairs -> 0 refused (nothing
# queued), else the new entry's id. The stream is named in ARGV, not KEYS: FCALL
# checks the keys it is given for read and write, and a worker may only append to
# the stream; the XADD inside is checked against exactly that right (its ACL
# selector). The XADD comes before the count: a refused XADD (Redis errors do not
# roll a function back) leaves no reservation behind.
QUEUE = Function(
    "pt_queue_order",
    _CHECK_LUA
    + "local id = redis.call('XADD', ARGV[4], '*', unpack(ARGV, 5))\n"
    + _COUNT_LUA
    + "return id",
)


class PendingOrders:
    """``reserve`` before queuing an order (worker); the drain releases it (master)."""

    def __init__(self, client: redis.Redis, cap: int, stale_seconds: float = 3600.0) -> None:
        self._redis = client
        self._reserve = RESERVE.bind(client)
        self._queue = QUEUE.bind(client)
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

    def queue(self, pipe: Pipeline, order: Order) -> None:
        """Add to ``pipe`` the one call that queues ``order`` if its account is under the
        cap; its answer is 0 when refused (nothing queued), else the entry's stream id."""
        self._queue(
            keys=[keys.pending_orders(order.account_id)],
            args=[
                order.order_id.hex,
                self.cap,
                self.stale_ms,
                keys.ORDERS,
                *itertools.chain.from_iterable(order.fields().items()),
            ],
            client=pipe,
        )
