"""The Redis FUNCTIONs the master loads at start-up for the workers to call (FCALL).

Workers may not EVAL (their ACL user, ``store/redis_users.py``); what they run
inside Redis is this library, loaded by the master's user with
``FUNCTION LOAD REPLACE`` (``store/functions.py`` says why).
"""

from __future__ import annotations

import redis

from papertrader.limits import backoff, limiter, pending_orders
from papertrader.store import functions
from papertrader.worker import history_cache

#: Every function of the library, in one place.
ALL = (
    limiter.GCRA,
    backoff.WAIT,
    backoff.FAILED,
    backoff.SUCCEEDED,
    pending_orders.RESERVE,  # kept for workers older than pt_queue_order
    pending_orders.QUEUE,
    history_cache.PUT,
)


def load_functions(client: redis.Redis) -> None:
    """Load the library (replacing an older version of it)."""
    functions.load(client, ALL)
