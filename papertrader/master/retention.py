"""The master's housekeeping task: purge rejected orders past their retention.

Runs as its own greenlet beside the market loop (``Master.start``): once at
start, then every PURGE_EVERY seconds; a database outage postpones it to the
next round. What is kept and why: ``store/rejected_orders.py``.
"""

from __future__ import annotations

from datetime import timedelta

import gevent.event
import psycopg2
from loguru import logger

from papertrader.store.pool import ConnectionPool, PoolTimeout
from papertrader.store.rejected_orders import purge_rejected

PURGE_EVERY = 3600.0


class RejectedOrdersPurge:
    def __init__(self, pool: ConnectionPool, retention_days: int) -> None:
        self._pool = pool
        self.retention = timedelta(days=retention_days)

    def run_once(self) -> int:
        try:
            removed = purge_rejected(self._pool, self.retention)
        except (psycopg2.Error, PoolTimeout) as exc:
            logger.warning("rejected orders not purged this round ({})", exc)
            return 0
        if removed:
            logger.info(
                "purged {} rejected orders older than {} days", removed, self.retention.days
            )
        return removed

    def run(self, stop: gevent.event.Event) -> None:
        while True:
            self.run_once()
            if stop.wait(timeout=PURGE_EVERY):
                return
