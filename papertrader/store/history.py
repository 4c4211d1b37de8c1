"""Price history reads (spec 4.2.2 getAssetValue*): ``asset_bars`` range scans, aggregated in SQL.

The master stores one bar per asset per update interval; the views want
minute, daily or monthly bars. PostgreSQL does the aggregation where the rows
are, so only the aggregated bars cross the wire: open = the first bar's open,
close = the last bar's close, high = max, low = min, volume = sum. Buckets are
UTC calendar units (``date_trunc`` on the UTC wall time), and every read is a
range scan of the primary key (symbol, period_start).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from psycopg2.extras import execute_values

from papertrader.market.quote import Quote
from papertrader.market.ranges import Unit
from papertrader.store.pool import ConnectionPool

UNITS: frozenset[str] = frozenset({"minute", "day", "month"})
CENT = Decimal("0.01")

_AGGREGATE = """
SELECT date_trunc(%(unit)s, period_start AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS bucket,
       (array_agg(open ORDER BY period_start ASC))[1] AS open,
       max(high) AS high,
       min(low) AS low,
       (array_agg(close ORDER BY period_start DESC))[1] AS close,
       sum(volume)::bigint AS volume
  FROM asset_bars
 WHERE symbol = %(symbol)s AND period_start >= %(start)s AND period_start < %(end)s
 GROUP BY bucket
 ORDER BY bucket
"""


@dataclass(frozen=True)
class Bar:
    """One (possibly aggregated) bar; ``period_start`` is the start of its bucket, UTC."""

    period_start: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: int

    def as_record(self) -> dict[str, Any]:
        """The fields of a history answer (protocol.records), prices tidied (150.25, not
        150.250000)."""
        return {
            "period_start": self.period_start,
            "open": tidy_price(self.open),
            "high": tidy_price(self.high),
            "low": tidy_price(self.low),
            "close": tidy_price(self.close),
            "volume": self.volume,
        }


def tidy_price(value: Decimal) -> Decimal:
    """NUMERIC(20,6) comes back with 6 places; keep the significant ones, at least two."""
    cents = value.quantize(CENT)
    return cents if cents == value else value.normalize()


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc)


def _bar(row: Sequence[Any]) -> Bar:
    return Bar(_utc(row[0]), row[1], row[2], row[3], row[4], int(row[5]))


def aggregate_bars(
    pool: ConnectionPool, symbol: str, start: datetime, end: datetime, unit: Unit
) -> list[Bar]:
    """Bars of ``symbol`` with period_start in [start, end), merged per ``unit``, oldest first."""
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {sorted(UNITS)}, not {unit!r}")
    with pool.transaction() as cur:
        cur.execute(_AGGREGATE, {"unit": unit, "symbol": symbol, "start": start, "end": end})
        return [_bar(row) for row in cur.fetchall()]


def bar_span(pool: ConnectionPool, symbol: str) -> tuple[datetime, datetime] | None:
    """(first, last) period_start stored for ``symbol``, or None if it has no bar.

    Two index probes (min and max of the primary key's second column for one
    symbol), not a scan.
    """
    with pool.transaction() as cur:
        cur.execute(
            "SELECT min(period_start), max(period_start) FROM asset_bars WHERE symbol = %s",
            (symbol,),
        )
        row = cur.fetchone()
    if row is None or row[0] is None:
        return None
    return _utc(row[0]), _utc(row[1])


def latest_bars(pool: ConnectionPool, symbol: str, limit: int) -> list[Bar]:
    """The last ``limit`` stored bars of ``symbol``, oldest first (the forecast's input)."""
    with pool.transaction() as cur:
        cur.execute(
            "SELECT period_start, open, high, low, close, volume FROM ("
            " SELECT * FROM asset_bars WHERE symbol = %s"
            " ORDER BY period_start DESC LIMIT %s) AS recent ORDER BY period_start",
            (symbol, limit),
        )
        return [_bar(row) for row in cur.fetchall()]


def last_quotes(pool: ConnectionPool, symbols: Sequence[str]) -> dict[str, Quote]:
    """The newest stored bar of each symbol as a quote (symbols without a bar are left
    out): where a restarted master continues its prices from. One index probe per
    symbol, read from PostgreSQL, which only the master writes."""
    if not symbols:
        return {}
    with pool.transaction() as cur:
        cur.execute(
            "SELECT DISTINCT ON (symbol) symbol, period_start, open, high, low, close, volume"
            " FROM asset_bars WHERE symbol = ANY(%s) ORDER BY symbol, period_start DESC",
            (list(symbols),),
        )
        rows = cur.fetchall()
    quotes = {}
    for symbol, *bar in rows:
        row = _bar(bar)
        quotes[str(symbol)] = Quote(
            str(symbol), tidy_price(row.open), tidy_price(row.high), tidy_price(row.low),
            tidy_price(row.close), row.volume, row.period_start,
        )  # fmt: skip
    return quotes


def insert_history(pool: ConnectionPool, quotes: Iterable[Quote], page_size: int = 1000) -> int:
    """Backfill bars (each at its own time); bars already stored are kept. Returns the
    number of rows actually inserted."""
    rows = [(q.symbol, q.time, q.open, q.high, q.low, q.close, q.volume) for q in quotes]
    if not rows:
        return 0
    with pool.transaction() as cur:
        inserted = execute_values(
            cur,
            "INSERT INTO asset_bars (symbol, period_start, open, high, low, close, volume)"
            " VALUES %s ON CONFLICT (symbol, period_start) DO NOTHING RETURNING 1",
            rows,
            page_size=page_size,
            fetch=True,
        )
    return len(inserted)
