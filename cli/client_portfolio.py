"""``pt client portfolio``, ``trades`` and ``history``: your money and what became of it.

``portfolio`` shows cash, positions with their profit or loss and the day's
change (another user's positions, if their profile is public); with
``--history`` the equity over time as a chart, of the practice account or of
a competition account (``--competition``). ``trades`` (``history``, the
spec's name) lists executed orders. Whether others may see them is
``pt client profile`` (client_profile.py).
"""

from __future__ import annotations

from collections.abc import Callable

import click

from . import client_format as fmt
from .client import client, options, server_errors, stored_session, wants_json
from .common import json_option, print_json


def _maybe_a_symbol(name: str) -> Callable[[str], str]:
    """Advice for "there is no user NAME" when NAME looks like a ticker."""

    def hint(reason: str) -> str:
        if name and "no user" in reason and name.upper() == name:
            return f"{reason} (the price bars of a symbol: `pt client bars {name}`)"
        return reason

    return hint


@client.command()
@click.argument("username", required=False, default="")
@click.option("--history", "show_history", is_flag=True, help="Your equity over time: a chart.")
@click.option(
    "--range",
    "range_",
    type=click.Choice(["day", "week", "month", "year", "all"]),
    default="week",
    show_default=True,
    help="With --history: how far back.",
)
@click.option(
    "--competition",
    default="",
    metavar="NAME",
    help="With --history: your account in this competition instead of your practice account "
    "(its positions: `pt client competitions show NAME`).",
)
@json_option
def portfolio(
    username: str, show_history: bool, range_: str, competition: str, as_json: bool
) -> None:
    """Cash, positions, their value and profit or loss (yours, or USERNAME's positions if
    that profile is public); --history: your equity over time."""
    if competition and not show_history:
        raise click.UsageError(
            "--competition goes with --history; the positions of a competition account: "
            f"`pt client competitions show {competition!r}`"
        )
    if show_history:
        if username:
            raise click.UsageError("--history shows your own equity only")
        _equity_history(range_, competition, as_json)
        return
    opts = options()
    stored = stored_session(opts)
    with server_errors(opts, _maybe_a_symbol(username)), opts.connect(stored.session_id) as conn:
        result = conn.portfolio(username)
    if wants_json(as_json):
        print_json(fmt.portfolio_document(result))
        return
    positions = result.positions
    click.echo(f"Portfolio of {result.username}")
    if result.cash is not None:
        click.echo(f"Cash         {fmt.money(result.cash)}")
    if result.reserved_cash:
        click.echo(
            f"Reserved     {fmt.money(result.reserved_cash)} for open orders "
            f"(available {fmt.money(result.available_cash)})"
        )
    if positions:
        own = result.own
        rows = [
            [
                p.symbol,
                fmt.quantity(p.quantity),
                fmt.price(p.average_price),
                fmt.price(p.price),
                fmt.money(p.market_value),
                *(
                    [fmt.signed(p.unrealized_pnl), fmt.percent(p.unrealized_pnl_percent)]
                    if own
                    else []
                ),
            ]
            for p in positions
        ]
        headers = [
            "SYMBOL",
            "QTY",
            "AVG PRICE",
            "PRICE",
            "VALUE",
            *(["P&L", "P&L %"] if own else []),
        ]
        click.echo(fmt.table(headers, rows, right=set(range(1, len(headers)))))
    else:
        click.echo("No positions.")
    if result.total_value is not None:
        click.echo(f"Total value  {fmt.money(result.total_value)}")
    if result.realized_pnl is not None:
        change = ""
        if result.day_change is not None:
            change = f"; today {fmt.signed(result.day_change)}"
        click.echo(
            f"Profit/loss  {fmt.signed(result.unrealized_pnl)} unrealized, "
            f"{fmt.signed(result.realized_pnl)} realized{change}"
        )


def _equity_history(range_: str, competition: str, as_json: bool) -> None:
    from .charts import equity_chart

    opts = options()
    stored = stored_session(opts)
    with server_errors(opts), opts.connect(stored.session_id) as conn:
        points = conn.equity_history(range_, competition)
    if wants_json(as_json):
        print_json(
            {
                "range": range_,
                "competition": competition or None,
                "points": [
                    {"time": fmt.text(p.at), "equity": fmt.text(p.equity), "cash": fmt.text(p.cash)}
                    for p in points
                ],
            }
        )
        return
    if len(points) < 2:
        now = f"; {fmt.money(points[-1].equity)} now" if points else ""
        click.echo(f"No equity recorded over the last {range_} yet{now}.")
        return
    click.echo(equity_chart(points, range_))


def _trades(username: str, as_json: bool) -> None:
    opts = options()
    stored = stored_session(opts)
    with server_errors(opts, _maybe_a_symbol(username)), opts.connect(stored.session_id) as conn:
        rows = conn.history(username)
    if wants_json(as_json):
        print_json(fmt.history_document(rows))
        return
    if not rows:
        click.echo("No transactions yet.")
        return
    table = [
        [
            fmt.when(row.executed_at),
            row.side,
            row.symbol,
            fmt.quantity(row.quantity),
            fmt.price(row.price),
            str(row.order_id or "-"),
        ]
        for row in rows
    ]
    headers = ["EXECUTED", "SIDE", "SYMBOL", "QTY", "PRICE", "ORDER"]
    click.echo(fmt.table(headers, table, right={3, 4}))


@client.command()
@click.argument("username", required=False, default="")
@json_option
def trades(username: str, as_json: bool) -> None:
    """Executed orders, oldest first (yours, or USERNAME's).

    The price bars of an asset are `pt client bars SYMBOL`.
    """
    _trades(username, as_json)


@client.command()
@click.argument("username", required=False, default="")
@json_option
def history(username: str, as_json: bool) -> None:
    """The same as `trades` (the protocol calls it transaction history).

    The price bars of an asset are `pt client bars SYMBOL`.
    """
    _trades(username, as_json)
