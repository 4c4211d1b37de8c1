"""Portfolio value over time: what the master records and what a chart of a range shows."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

from papertrader.master.equity import EquityRecorder
from papertrader.store import equity
from papertrader.store.accounts import create_account
from papertrader.store.pool import ConnectionPool

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=timezone.utc)


def hold(pool: ConnectionPool, account: int, symbol: str, quantity: int) -> None:
    with pool.transaction() as cur:
        cur.execute(
            "INSERT INTO positions (account_id, symbol, quantity, average_price)"
            " VALUES (%s, %s, %s, 1)",
            (account, symbol, quantity),
        )


def test_equity_is_cash_plus_positions_at_the_interval_price(pool: ConnectionPool) -> None:
    rich = create_account(pool, "rich", "r@example.com", "$2b$04$x", Decimal("1000.00")).id
    idle = create_account(pool, "idle", "i@example.com", "$2b$04$x", Decimal("50.00")).id
    hold(pool, rich, "AAPL", 3)
    hold(pool, rich, "MSFT", 2)
    prices = {"AAPL": Decimal("100.005"), "MSFT": Decimal("10.00")}
    assert equity.record(pool, prices, T0) == 1  # only accounts that hold something
    (point,) = equity.series(pool, rich, "day", T0 + timedelta(minutes=1))
    # 1000 + round(3 x 100.005 + 2 x 10, 2) = 1000 + 320.02 (exact, to the cent)
    assert (point.at, point.equity, point.cash) == (T0, Decimal("1320.02"), Decimal("1000.00"))
    assert equity.series(pool, idle, "day", T0) == []
    assert equity.before(pool, rich, T0 + timedelta(seconds=1)) == Decimal("1320.02")
    assert equity.before(pool, rich, T0) is None


def test_ranges_show_one_point_per_bucket_and_old_points_are_thinned(
    pool: ConnectionPool,
) -> None:
    account = create_account(pool, "t", "t@example.com", "$2b$04$x", Decimal("0.00")).id
    hold(pool, account, "AAPL", 1)
    start = T0 - timedelta(days=40)
    stamps = [start + timedelta(minutes=m) for m in range(0, 60 * 24 * 41, 30)]  # 41 days
    for stamp in stamps:
        equity.record(pool, {"AAPL": Decimal(stamp.minute + stamp.hour)}, stamp)
    now = start + timedelta(days=41)
    day = equity.series(pool, account, "day", now)
    assert len(day) == 48 and day == sorted(day, key=lambda p: p.at)
    week = equity.series(pool, account, "week", now)
    assert len(week) == 7 * 24  # one an hour, the last of each
    assert all(p.at.minute == 30 for p in week)
    days = {stamp.date() for stamp in stamps}
    assert len(equity.series(pool, account, "year", now)) == len(days)
    removed = equity.thin(pool, now)
    assert removed > 0
    assert len(equity.series(pool, account, "day", now)) == 48  # the last day untouched
    with pool.transaction() as cur:
        cur.execute(
            "SELECT count(*) FROM equity_snapshots WHERE account_id = %s AND at < %s",
            (account, now - timedelta(days=31)),
        )
        month_ago = now - timedelta(days=31)
        old_days = {stamp.date() for stamp in stamps if stamp < month_ago}
        assert cur.fetchone() == (len(old_days),)  # one a day past a month


def test_the_recorder_records_once_per_period(pool: ConnectionPool) -> None:
    account = create_account(pool, "p", "p@example.com", "$2b$04$x", Decimal("0.00")).id
    hold(pool, account, "AAPL", 1)
    clock = [0.0]
    recorder = EquityRecorder(pool, lambda: {"AAPL": Decimal("5")}, 60, clock=lambda: clock[0])
    assert recorder.run() == 1
    clock[0] = 59.0
    assert recorder.run() == 0  # not yet
    clock[0] = 60.5
    assert recorder.run() == 1
