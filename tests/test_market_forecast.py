"""The naive forecast (Holt's linear smoothing) on series whose answer is known."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from papertrader.market.forecast import MAX_HORIZON, holt_forecast

T = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
STEP = timedelta(seconds=5)


def test_a_straight_line_is_extended_exactly_with_no_band() -> None:
    closes = [Decimal(100) + Decimal("0.50") * i for i in range(30)]  # 100.00 .. 114.50
    result = holt_forecast(closes, T, STEP, 4)
    assert [p.value for p in result.points] == [
        Decimal("115.00"), Decimal("115.50"), Decimal("116.00"), Decimal("116.50")
    ]  # fmt: skip
    assert all(p.lower == p.value == p.upper for p in result.points)
    assert result.sigma == Decimal("0.00") and result.based_on == 30
    assert [p.time for p in result.points] == [T + STEP * h for h in range(1, 5)]


def test_a_constant_series_stays_flat() -> None:
    result = holt_forecast([Decimal("42.10")] * 10, T, STEP, 3)
    assert {p.value for p in result.points} == {Decimal("42.10")}


def test_noise_gives_a_band_that_widens_with_the_horizon() -> None:
    wiggle = [Decimal(0), Decimal("1.2"), Decimal("-0.8"), Decimal("0.5"), Decimal("-1.1")]
    closes = [Decimal(50) + wiggle[i % 5] for i in range(40)]
    result = holt_forecast(closes, T, STEP, 9)
    widths = [p.upper - p.lower for p in result.points]
    assert widths[0] > 0 and widths == sorted(widths)
    # the band is 1.96 sigma sqrt(h) each side: 9 steps is three times 1 step (to the cent)
    assert abs(widths[8] - 3 * widths[0]) <= Decimal("0.04")
    for point in result.points:
        assert point.lower <= point.value <= point.upper
        assert point.value.as_tuple().exponent == -2  # cents, Decimal


def test_a_falling_line_is_floored_at_zero() -> None:
    closes = [Decimal(10) - i for i in range(8)]  # 10 .. 3
    result = holt_forecast(closes, T, STEP, 6)
    assert [p.value for p in result.points][-1] == Decimal("0.00")
    assert all(p.lower >= 0 for p in result.points)


def test_bounds() -> None:
    with pytest.raises(ValueError, match="at least 3"):
        holt_forecast([Decimal(1), Decimal(2)], T, STEP, 1)
    with pytest.raises(ValueError, match="horizon"):
        holt_forecast([Decimal(1)] * 5, T, STEP, MAX_HORIZON + 1)
    with pytest.raises(ValueError, match="horizon"):
        holt_forecast([Decimal(1)] * 5, T, STEP, 0)
