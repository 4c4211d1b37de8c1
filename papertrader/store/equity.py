"""Each account's equity over time (``equity_snapshots``, migration 0007).

``record`` writes one row per account holding a position, in one statement
(cash + units x the interval's price, per account); ``thin`` keeps old history
small (after a day one row an hour, after a month one a day); ``series`` reads
an account's points for a range, one per bucket (the last), so a year is a few
hundred points, not half a million.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from papertrader.store.pool import ConnectionPool

#: range -> (how far back, bucket width) of ``series``.
RANGES: dict[str, tuple[timedelta | None, str]] = {
    "day": (timedelta(days=1), "minute"),
    "week": (timedelta(days=7), "hour"),
    "month": (timedelta(days=31), "hour"),
    "year": (timedelta(days=366), "day"),
    "all": (None, "day"),
}


@dataclass(frozen=True)
class EquityPoint:
    at: datetime
    equity: Decimal
    cash: Decimal


def record(pool: ConnectionPool, prices: Mapping[str, Decimal], at: datetime) -> int:
    """One point for every account that holds a position; returns how many."""
    symbols = sorted(prices)
    with pool.transaction() as cur:
        cur.execute(
            "INSERT INTO equity_snapshots (account_id, at, equity, cash)"
            " SELECT a.id, %s, a.cash + round(sum(p.quantity * x.price), 2), a.cash"
            " FROM positions p"
            " JOIN accounts a ON a.id = p.account_id"
            " JOIN unnest(%s::text[], %s::numeric[]) AS x(symbol, price) ON x.symbol = p.symbol"
            " WHERE p.quantity > 0"
            " GROUP BY a.id, a.cash"
            " ON CONFLICT (account_id, at) DO NOTHING",
            (at, symbols, [prices[s] for s in symbols]),
        )
        return int(cur.rowcount)


def thin(pool: ConnectionPool, now: datetime) -> int:
    """Keep the last point of each hour after a day, of each day after a month."""
    with pool.transaction() as cur:
        cur.execute(
            "DELETE FROM equity_snapshots e USING ("
            "  SELECT account_id, at, row_number() OVER (PARTITION BY account_id,"
            "    date_trunc(CASE WHEN at < %s THEN 'day' ELSE 'hour' END, at)"
            "    ORDER BY at DESC) AS n"
            "  FROM equity_snapshots WHERE at < %s) old"
            " WHERE e.account_id = old.account_id AND e.at = old.at AND old.n > 1",
            (now - timedelta(days=31), now - timedelta(days=1)),
        )
        return int(cur.rowcount)


def series(pool: ConnectionPool, account_id: int, range_: str, now: datetime) -> list[EquityPoint]:
    """The account's points over ``range_`` (a key of RANGES), oldest first, the last of
    each bucket."""
    back, bucket = RANGES[range_]
    since = datetime.min.replace(tzinfo=now.tzinfo) if back is None else now - back
    with pool.transaction() as cur:
        cur.execute(
            "SELECT DISTINCT ON (date_trunc(%s, at)) at, equity, cash FROM equity_snapshots"
            " WHERE account_id = %s AND at >= %s"
            " ORDER BY date_trunc(%s, at), at DESC",
            (bucket, account_id, since, bucket),
        )
        rows = cur.fetchall()
    return [EquityPoint(at, Decimal(equity), Decimal(cash)) for at, equity, cash in rows]


def before(pool: ConnectionPool, account_id: int, moment: datetime) -> Decimal | None:
    """The account's last recorded equity before ``moment`` (the day's start), if any."""
    with pool.transaction() as cur:
        cur.execute(
            "SELECT equity FROM equity_snapshots WHERE account_id = %s AND at < %s"
            " ORDER BY at DESC LIMIT 1",
            (account_id, moment),
        )
        row = cur.fetchone()
    return None if row is None else Decimal(row[0])
