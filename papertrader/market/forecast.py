"""getAssetValuePredicted: a naive forecast of the next update intervals, for practice.

**This is a toy model for learning, not investment advice.** Prices of real
assets are close to a random walk; no smoothing of past prices predicts them.
The forecast is here so students can see what a simple time-series model does
and how wide its uncertainty is, and compare it with what happens.

Method: Holt's linear exponential smoothing (level + trend) over the closes of
the last ``WINDOW`` stored bars (one bar per update interval):

* level ``l_t = a * y_t + (1 - a) * (l_{t-1} + b_{t-1})``
* trend ``b_t = c * (l_t - l_{t-1}) + (1 - c) * b_{t-1}``
* started with ``l_0 = y_0``, ``b_0 = y_1 - y_0``;
* ``a`` and ``c`` are chosen from 0.1, 0.2 ... 0.9 to minimise the squared
  one-step-ahead errors on the window (the first ties win, so it is
  deterministic);
* the forecast ``h`` intervals ahead is ``l_n + h * b_n``, with a band of
  ``± 1.96 * s * sqrt(h)``, ``s`` the root mean square of the one-step errors:
  roughly a 95 % interval *if* the errors were independent and normal (they
  are not quite: take it as an order of magnitude).

All arithmetic is Decimal; results are rounded to cents (ROUND_HALF_EVEN) and
floored at 0.00 (a price cannot go below zero, a straight trend line can).
The horizon counts update intervals, from 1 to ``MAX_HORIZON``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import Any

METHOD = "holt-linear"
WINDOW = 120
MIN_BARS = 3
MAX_HORIZON = 500
Z_95 = Decimal("1.96")
CENT = Decimal("0.01")
ZERO = Decimal(0)
_GRID = tuple(Decimal(i) / 10 for i in range(1, 10))


@dataclass(frozen=True)
class ForecastPoint:
    step: int  # intervals ahead
    time: datetime  # start of that interval
    value: Decimal
    lower: Decimal
    upper: Decimal

    def as_record(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "time": self.time,
            "value": self.value,
            "lower": self.lower,
            "upper": self.upper,
        }


@dataclass(frozen=True)
class Forecast:
    alpha: Decimal
    beta: Decimal
    sigma: Decimal  # RMS of the one-step errors, in cents
    based_on: int  # bars used
    last_time: datetime
    last_close: Decimal
    points: tuple[ForecastPoint, ...]

    def as_record(self, symbol: str, step_seconds: float) -> dict[str, Any]:
        return {
            "symbol": symbol,
            "method": METHOD,
            "horizon": len(self.points),
            "step_seconds": Decimal(repr(step_seconds)).normalize(),
            "alpha": self.alpha,
            "beta": self.beta,
            "sigma": self.sigma,
            "based_on": self.based_on,
            "last_time": self.last_time,
            "last_close": self.last_close,
            "points": [p.as_record() for p in self.points],
            "note": "naive model for practice, not investment advice",
        }


def _smooth(
    values: Sequence[Decimal], alpha: Decimal, beta: Decimal
) -> tuple[Decimal, Decimal, Decimal, int]:
    """Run Holt's recursion: (level, trend, sum of squared one-step errors, error count)."""
    level, trend = values[0], values[1] - values[0]
    sse, count = ZERO, 0
    for index in range(1, len(values)):
        value = values[index]
        predicted = level + trend
        if index >= 2:  # the step-1 error is 0 by construction of the start values
            error = value - predicted
            sse += error * error
            count += 1
        new_level = alpha * value + (1 - alpha) * predicted
        trend = beta * (new_level - level) + (1 - beta) * trend
        level = new_level
    return level, trend, sse, count


def _cents(value: Decimal) -> Decimal:
    return max(ZERO, value).quantize(CENT, rounding=ROUND_HALF_EVEN)


def holt_forecast(
    closes: Sequence[Decimal], last_time: datetime, step: timedelta, horizon: int
) -> Forecast:
    """Forecast ``horizon`` steps after ``closes`` (oldest first; ValueError if unusable)."""
    if len(closes) < MIN_BARS:
        raise ValueError(f"needs at least {MIN_BARS} bars, has {len(closes)}")
    if not 1 <= horizon <= MAX_HORIZON:
        raise ValueError(f"horizon must be from 1 to {MAX_HORIZON} intervals")
    values = list(closes[-WINDOW:])
    with localcontext() as ctx:
        ctx.prec = 34
        best: tuple[Decimal, Decimal, Decimal, Decimal, Decimal, int] | None = None
        for alpha in _GRID:
            for beta in _GRID:
                level, trend, sse, count = _smooth(values, alpha, beta)
                if best is None or sse < best[4]:
                    best = (alpha, beta, level, trend, sse, count)
        assert best is not None
        alpha, beta, level, trend, sse, count = best
        sigma = (sse / count).sqrt() if count else ZERO
        points = []
        for h in range(1, horizon + 1):
            centre = level + h * trend
            half = Z_95 * sigma * Decimal(h).sqrt()
            points.append(
                ForecastPoint(
                    step=h,
                    time=last_time + step * h,
                    value=_cents(centre),
                    lower=_cents(centre - half),
                    upper=_cents(centre + half),
                )
            )
        return Forecast(
            alpha=alpha,
            beta=beta,
            sigma=_cents(sigma),
            based_on=len(values),
            last_time=last_time,
            last_close=values[-1],
            points=tuple(points),
        )
