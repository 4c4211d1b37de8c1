"""Price history in PostgreSQL: SQL aggregation checked against a plain Python computation."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from papertrader.market.quote import Quote
from papertrader.market.ranges import Unit, window
from papertrader.store import history
from papertrader.store.pool import ConnectionPool

START = datetime(2026, 1, 30, tzinfo=timezone.utc)
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


def python_aggregate(quotes: list[Quote], unit: str) -> list[tuple[object, ...]]:
    """The same aggregation, the obvious way: first open, max high, min low, last close, sum."""

    def bucket(moment: datetime) -> datetime:
        if unit == "minute":
            return moment.replace(second=0, microsecond=0)
        if unit == "day":
            return moment.replace(hour=0, minute=0, second=0, microsecond=0)
        return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)

    groups: dict[datetime, list[Quote]] = {}
    for quote in sorted(quotes, key=lambda q: q.time):
        groups.setdefault(bucket(quote.time), []).append(quote)
    return [
        (
            start,
            group[0].open,
            max(q.high for q in group),
            min(q.low for q in group),
            group[-1].close,
            sum(q.volume for q in group),
        )
        for start, group in sorted(groups.items())
    ]


def as_tuples(bars: list[history.Bar]) -> list[tuple[object, ...]]:
    return [(b.period_start, b.open, b.high, b.low, b.close, b.volume) for b in bars]


prices = st.integers(min_value=1, max_value=10_000_000).map(lambda c: Decimal(c) / 100)


@st.composite
def bar_sets(draw: st.DrawFn) -> list[Quote]:
    offsets = draw(st.sets(st.integers(0, 400 * 24 * 60), min_size=1, max_size=60))
    quotes = []
    for offset in sorted(offsets):
        a, b, c, d = (draw(prices) for _ in range(4))
        low, high = min(a, b, c, d), max(a, b, c, d)
        quotes.append(
            Quote(
                "AAPL",
                b,
                high,
                low,
                c,
                draw(st.integers(0, 10**9)),
                START + offset * timedelta(minutes=1),
            )
        )
    return quotes


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(quotes=bar_sets(), unit=st.sampled_from(["minute", "day", "month"]))
def test_sql_aggregation_matches_python(
    pool: ConnectionPool, quotes: list[Quote], unit: Unit
) -> None:
    with pool.transaction() as cur:
        cur.execute("DELETE FROM asset_bars")
    assert history.insert_history(pool, quotes) == len(quotes)
    end = START + timedelta(days=500)
    got = history.aggregate_bars(pool, "AAPL", START, end, unit)
    assert as_tuples(got) == python_aggregate(quotes, unit)


def test_ranges_cut_at_the_requested_day_and_ignore_other_symbols(pool: ConnectionPool) -> None:
    day = date(2026, 3, 18)
    quotes = [
        Quote("AAPL", Decimal(10 + i), Decimal(11 + i), Decimal(9 + i), Decimal(10 + i), 100,
              datetime(2026, 3, 1, tzinfo=timezone.utc) + timedelta(days=i))
        for i in range(40)
    ] + [Quote("MSFT", Decimal(1), Decimal(1), Decimal(1), Decimal(1), 1, START)]  # fmt: skip
    history.insert_history(pool, quotes)
    week = window("week", day, NOW)
    bars = history.aggregate_bars(pool, "AAPL", week.start, week.end, week.unit)
    assert [b.period_start.date() for b in bars] == [date(2026, 3, d) for d in range(12, 19)]
    month = window("month", day, NOW)
    assert len(history.aggregate_bars(pool, "AAPL", month.start, month.end, month.unit)) == 18
    year = window("year", day, NOW)
    monthly = history.aggregate_bars(pool, "AAPL", year.start, year.end, year.unit)
    assert len(monthly) == 1 and monthly[0].open == Decimal(10) and monthly[0].close == Decimal(27)
    assert monthly[0].volume == 1800
    assert history.bar_span(pool, "AAPL") == (quotes[0].time, quotes[39].time)
    assert history.bar_span(pool, "TSLA") is None
    assert [b.close for b in history.latest_bars(pool, "AAPL", 3)] == [
        Decimal(47),
        Decimal(48),
        Decimal(49),
    ]


def test_backfill_keeps_bars_already_stored(pool: ConnectionPool) -> None:
    first = Quote("AAPL", Decimal(1), Decimal(2), Decimal(1), Decimal(2), 5, START)
    changed = Quote("AAPL", Decimal(9), Decimal(9), Decimal(9), Decimal(9), 9, START)
    assert history.insert_history(pool, [first]) == 1
    assert history.insert_history(pool, [changed]) == 0
    assert history.latest_bars(pool, "AAPL", 1)[0].close == Decimal(2)


def test_records_show_prices_tidily() -> None:
    bar = history.Bar(START, Decimal("150.250000"), Decimal("151.123400"), Decimal("150"),
                      Decimal("150.500000"), 7)  # fmt: skip
    record = bar.as_record()
    assert str(record["open"]) == "150.25" and str(record["high"]) == "151.1234"
    assert str(record["low"]) == "150.00" and record["volume"] == 7


def test_windows_of_each_range() -> None:
    day = date(2026, 2, 11)
    assert window("day", day, NOW).unit == "minute"
    assert window("week", day, NOW).start.date() == date(2026, 2, 5)
    assert window("month", day, NOW).start.date() == date(2026, 2, 1)
    assert window("year", day, NOW).start.date() == date(2026, 1, 1)
    assert window("year", day, NOW).end.date() == date(2026, 2, 12)
    assert window("all", None, NOW).end.date() == date(2026, 11, 26)
    assert window("day", day, NOW).is_open(NOW) is False
    assert window("day", NOW.date(), NOW).is_open(NOW) is True


def test_dates_outside_the_allowed_range_are_refused_before_a_window_is_built() -> None:
    from datetime import date, datetime, timezone

    from papertrader.market.ranges import FIRST_DATE, date_problem, window

    now = datetime(2026, 3, 18, 12, tzinfo=timezone.utc)
    today = now.date()
    for bad in (date(9999, 12, 31), date(1, 1, 1), date(1969, 12, 31), date(2026, 3, 19)):
        problem = date_problem(bad, today)
        assert problem is not None and "from 1970-01-01 to 2026-03-18" in problem
    for good in (FIRST_DATE, today):
        assert date_problem(good, today) is None
        for kind in ("day", "week", "month", "year", "all"):
            window(kind, good, now)  # never overflows inside the allowed range
