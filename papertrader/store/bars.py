"""Asset bars (spec 2.4.3) and the asset list in PostgreSQL.

The master writes one bar per asset per update interval; the primary key
(symbol, period_start) makes a repeated write (a restart inside an interval)
a no-op instead of an error or a second bar.
"""

from __future__ import annotations

from collections.abc import Iterable

from psycopg2.extras import execute_values

from papertrader.market.quote import Quote
from papertrader.store.pool import ConnectionPool


def insert_bars(pool: ConnectionPool, quotes: Iterable[Quote]) -> None:
    """Store the bars of one interval; bars already stored are left as they are."""
    rows = [(q.symbol, q.time, q.open, q.high, q.low, q.close, q.volume) for q in quotes]
    if not rows:
        return
    with pool.transaction() as cur:
        execute_values(
            cur,
            "INSERT INTO asset_bars (symbol, period_start, open, high, low, close, volume)"
            " VALUES %s ON CONFLICT (symbol, period_start) DO NOTHING",
            rows,
        )


def ensure_assets(pool: ConnectionPool, symbols: Iterable[str]) -> None:
    """Make sure every configured symbol has a row in ``assets`` (names are filled in later)."""
    rows = [(symbol,) for symbol in symbols]
    if not rows:
        return
    with pool.transaction() as cur:
        execute_values(
            cur, "INSERT INTO assets (symbol) VALUES %s ON CONFLICT (symbol) DO NOTHING", rows
        )
