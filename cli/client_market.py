"""``pt client quote | bars | forecast``: market data, for people and scripts.

The commands join the ``pt client`` group (``client.py``): a quote is the
current bar of an asset, ``bars`` its price history over a range (minute,
daily or monthly bars), ``forecast`` a naive Holt forecast. Charts are drawn
with plotext, imported only when one is asked for.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import click

from papertrader.market.forecast import MAX_HORIZON
from papertrader.market.ranges import RANGE_NAMES

from . import client_format as fmt
from .client import client, options, server_errors, stored_session, wants_json
from .common import json_option, print_json

if TYPE_CHECKING:
    from papertrader.client.models import Bar
    from papertrader.market.quote import Quote

range_option = click.option(
    "--range",
    "range_",
    type=click.Choice(RANGE_NAMES),
    default=None,
    help="day: minute bars of the date; week, month: daily bars up to it; "
    "year: monthly bars up to it; all: monthly bars of everything (default: day).",
)
date_option = click.option(
    "--date",
    "on",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="The UTC day the range ends on, YYYY-MM-DD (default: today).",
)


def _price_history(symbol: str, range_: str, on: datetime | None) -> list[Bar]:
    opts = options()
    stored = stored_session(opts)
    with server_errors(opts), opts.connect(stored.session_id) as conn:
        return conn.price_history(symbol.upper(), range_, on.date() if on else None)


@client.command()
@click.argument("symbols", nargs=-1, required=True)
@click.option("--chart", is_flag=True, help="Draw the price of SYMBOL over --range.")
@range_option
@date_option
@json_option
def quote(
    symbols: tuple[str, ...], chart: bool, range_: str | None, on: datetime | None, as_json: bool
) -> None:
    """Current price bar of one or more SYMBOLS (--chart: a price chart of one)."""
    if chart or range_ or on:
        if len(symbols) != 1:
            raise click.UsageError("--chart draws one symbol at a time")
        symbol, shown_range = symbols[0].upper(), range_ or "day"
        bars = _price_history(symbol, shown_range, on)
        if wants_json(as_json):
            print_json(fmt.bars_document(symbol, shown_range, bars))
        else:
            from .charts import price_chart

            click.echo(price_chart(symbol, bars, shown_range))
        return
    opts = options()
    stored = stored_session(opts)
    quotes: list[Quote] = []
    with server_errors(opts), opts.connect(stored.session_id) as conn:
        for symbol in symbols:
            quotes.append(conn.quote(symbol.upper()))
    if wants_json(as_json):
        documents = [fmt.quote_document(q) for q in quotes]
        print_json(documents[0] if len(documents) == 1 else documents)
        return
    rows = [
        [q.symbol, fmt.price(q.open), fmt.price(q.high), fmt.price(q.low), fmt.price(q.close),
         fmt.quantity(q.volume), fmt.when(q.time)]
        for q in quotes
    ]  # fmt: skip
    headers = ["SYMBOL", "OPEN", "HIGH", "LOW", "CLOSE", "VOLUME", "TIME"]
    click.echo(fmt.table(headers, rows, right={1, 2, 3, 4, 5}))


@client.command()
@click.argument("symbol")
@range_option
@date_option
@click.option("--chart", is_flag=True, help="Draw them instead of listing them.")
@json_option
def bars(symbol: str, range_: str | None, on: datetime | None, chart: bool, as_json: bool) -> None:
    """The price bars of SYMBOL over a range (`pt client bars AAPL --range week`).

    Your executed orders are `pt client trades`.
    """
    from .charts import bars_rows

    symbol, shown_range = symbol.upper(), range_ or "day"
    rows = _price_history(symbol, shown_range, on)
    if wants_json(as_json):
        print_json(fmt.bars_document(symbol, shown_range, rows))
        return
    if chart:
        from .charts import price_chart

        click.echo(price_chart(symbol, rows, shown_range))
        return
    headers = ["TIME (UTC)", "OPEN", "HIGH", "LOW", "CLOSE", "VOLUME"]
    click.echo(f"{symbol} {shown_range}: {len(rows)} bars")
    click.echo(fmt.table(headers, bars_rows(rows, fmt.price), right={1, 2, 3, 4, 5}))


@client.command()
@click.argument("symbol")
@click.option(
    "--horizon",
    type=click.IntRange(1, MAX_HORIZON),
    default=10,
    show_default=True,
    help="How many update intervals ahead.",
)
@click.option("--chart", is_flag=True, help="Draw the recent closes and the forecast band.")
@json_option
def forecast(symbol: str, horizon: int, chart: bool, as_json: bool) -> None:
    """A naive forecast of SYMBOL's price (Holt's linear smoothing): practice, not advice."""
    opts = options()
    stored = stored_session(opts)
    symbol = symbol.upper()
    with server_errors(opts), opts.connect(stored.session_id) as conn:
        result = conn.forecast(symbol, horizon)
    if wants_json(as_json):
        print_json(fmt.text(result))
        return
    points = result.points
    if chart:
        from .charts import forecast_chart

        click.echo(forecast_chart(symbol, [result.last_close], result))
    click.echo(
        f"{symbol}: last close {fmt.price(result.last_close)}; "
        f"{result.method} over {result.based_on} bars "
        f"(alpha {result.alpha}, beta {result.beta})"
    )
    rows = [
        [str(p.step), fmt.when(p.time), fmt.price(p.value), fmt.price(p.lower),
         fmt.price(p.upper)]
        for p in points
    ]  # fmt: skip
    click.echo(fmt.table(["STEP", "TIME", "FORECAST", "LOWER", "UPPER"], rows, right={0, 2, 3, 4}))
    click.echo("A naive model for practice, not investment advice.")
