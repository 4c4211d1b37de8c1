"""Terminal charts and tables for price history and forecasts (``pt client``).

Drawing uses plotext, which renders to a string; floats appear only here, to
place points on the screen: every number printed comes from the Decimal
values, never from the plotted floats.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from papertrader.client.models import Bar, Forecast

CHART_HEIGHT = 20
#: How the x axis labels a bar's time, per range.
TIME_FORMATS = {
    "day": "%H:%M",
    "week": "%a %d",
    "month": "%b %d",
    "year": "%b %Y",
    "all": "%b %Y",
    "forecast": "%m-%d %H:%M:%S",
    "span-day": "%Y-%m-%d %H:%M",
}


def _label(moment: Any, range_: str) -> str:
    if not isinstance(moment, datetime):
        return "-"
    return moment.strftime(TIME_FORMATS.get(range_, "%Y-%m-%d"))


def _ticks(count: int, wanted: int = 6) -> list[int]:
    if count <= wanted:
        return list(range(count))
    step = (count - 1) / (wanted - 1)
    return sorted({round(i * step) for i in range(wanted)})


def _size() -> tuple[int, int]:
    columns = shutil.get_terminal_size((100, 30)).columns
    return max(40, min(columns, 160)), CHART_HEIGHT


def _figure(width: int, height: int) -> Any:
    import plotext as plt  # only when a chart is drawn: it is slow to import

    figure = plt.figure
    figure.clear()
    figure.plot_size(width, height)
    return figure


def _render(figure: Any) -> str:
    colorless = not sys.stdout.isatty()
    text: str = figure.build().string(colorless=colorless)
    figure.clear()
    return text


def price_chart(symbol: str, bars: Sequence[Bar], range_: str) -> str:
    """Closing prices of ``bars`` as a line (a candle-free chart that any terminal shows)."""
    closes = [float(bar.close) for bar in bars]
    xs = list(range(1, len(closes) + 1))
    figure = _figure(*_size())
    figure.draw(figure.signal(xs, closes, marker="braille").lines())
    first, last = bars[0], bars[-1]
    figure.title(
        f"{symbol} {range_}: {len(bars)} bars, close {last.close} "
        f"({_label(first.period_start, 'span-' + range_)} .. "
        f"{_label(last.period_start, 'span-' + range_)} UTC)"
    )
    ticks = _ticks(len(bars))
    figure.ruler("x").ticks(
        [xs[i] for i in ticks], [_label(bars[i].period_start, range_) for i in ticks]
    )
    return _render(figure)


def forecast_chart(symbol: str, history: Sequence[Decimal], forecast: Forecast) -> str:
    """Recent closes, then the forecast and its band."""
    points = forecast.points
    past = [float(value) for value in history]
    start = len(past)
    figure = _figure(*_size())
    if past:
        figure.draw(figure.signal(list(range(1, start + 1)), past).lines().label("closes"))
    xs = [start + p.step for p in points]
    for name in ("value", "lower", "upper"):
        ys = [float(getattr(p, name)) for p in points]
        label = "forecast" if name == "value" else name
        figure.draw(figure.signal(xs, ys, marker="braille").lines().label(label))
    figure.title(f"{symbol}: naive Holt forecast, {len(points)} intervals (practice, not advice)")
    return _render(figure)


def bars_rows(bars: Sequence[Bar], price: Any) -> list[list[str]]:
    """Table rows: TIME OPEN HIGH LOW CLOSE VOLUME (prices formatted by ``price``)."""
    rows = []
    for bar in bars:
        moment = bar.period_start
        when = moment.strftime("%Y-%m-%d %H:%M") if isinstance(moment, datetime) else "-"
        rows.append(
            [
                when,
                price(bar.open),
                price(bar.high),
                price(bar.low),
                price(bar.close),
                f"{bar.volume or 0:,}",
            ]
        )
    return rows


def equity_chart(points: Sequence[Any], range_: str) -> str:
    """An account's equity over ``range_`` (points with ``at`` and ``equity``)."""
    values = [float(p.equity) for p in points]
    xs = list(range(1, len(values) + 1))
    figure = _figure(*_size())
    figure.draw(figure.signal(xs, values, marker="braille").lines())
    first, last = points[0], points[-1]
    figure.title(
        f"equity, {range_}: {last.equity} now "
        f"({_label(first.at, 'span-day')} .. {_label(last.at, 'span-day')} UTC)"
    )
    ticks = _ticks(len(points))
    figure.ruler("x").ticks([xs[i] for i in ticks], [_label(points[i].at, range_) for i in ticks])
    return _render(figure)
