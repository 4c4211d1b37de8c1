"""``pt client competitions`` and ``pt client leaderboard``: trading competitions.

As a class uses them: the teacher creates a private competition (`create
--private`) and hands out its join code; students `join --code CODE`, trade
with `pt client buy ... --competition NAME` in an account of its own, and
follow `pt client leaderboard NAME`.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import click

from . import client_format as fmt
from .client import client
from .client import options as _options
from .client import server_errors as _server_errors
from .client import stored_session as _stored_session
from .client import wants_json as _wants_json
from .common import fail, json_option, print_json

if TYPE_CHECKING:
    from papertrader.client import Competition, Leaderboard

_SPAN = re.compile(r"(\d{1,5})([mhdw])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class When(click.ParamType[datetime, Any]):
    """A moment: ISO 8601 (a date, or a date and time; UTC unless it says), or a span
    from now such as 90m, 6h, 30d, 2w."""

    name = "WHEN"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime):
            return value
        text = str(value).strip()
        span = _SPAN.fullmatch(text)
        if span:
            return datetime.now(timezone.utc) + timedelta(**{_UNITS[span[2]]: int(span[1])})
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            self.fail(f"{text!r} is neither a date (2026-12-31T16:00) nor a span (30d, 6h)")
        return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


class Cash(click.ParamType[Decimal, Any]):
    name = "AMOUNT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            amount = Decimal(str(value).replace(",", "").replace("_", ""))
        except InvalidOperation:
            self.fail(f"{value!r} is not an amount")
        if not amount.is_finite() or amount <= 0 or amount != amount.quantize(Decimal("0.01")):
            self.fail(f"{value!r} is not an amount in cents above 0")
        return amount


def terms_options(command: Any) -> Any:
    """A new competition's terms, for `pt client competitions create` and `pt competitions
    create` alike: --ends, --starts, --cash, --symbols, --private."""
    for decorator in reversed(
        (
            click.option("--ends", "ends_at", type=When(), required=True,
                         help="When it ends: a span such as 30d, or a date."),
            click.option("--starts", "starts_at", type=When(), default=None,
                         help="When it starts (default: now)."),
            click.option("--cash", "starting_cash", type=Cash(), default=None,
                         help="Every member's starting cash (default: the practice cash)."),
            click.option("--symbols", default="", metavar="A,B,...",
                         help="The assets it trades, comma-separated (default: every asset)."),
            click.option("--private", is_flag=True,
                         help="Joined only with its join code (a class)."),
        )
    ):  # fmt: skip
        command = decorator(command)
    return command


def competition_document(competition: Competition) -> dict[str, Any]:
    document = fmt.document(
        {
            "name": competition.name,
            "status": competition.status,
            "starts_at": competition.starts_at,
            "ends_at": competition.ends_at,
            "starting_cash": competition.starting_cash,
            "symbols": list(competition.symbols),
            "private": competition.private,
            "join_code": competition.join_code,
            "members": competition.members,
            "joined": competition.joined,
            "created_by": competition.created_by,
        }
    )
    account = competition.account
    if account is not None:
        document["account"] = fmt.text(
            {
                "rank": account.rank,
                "cash": account.cash,
                "equity": account.equity,
                "gain": account.gain,
                "return": account.return_,
                "return_percent": account.return_percent,
                "positions": [
                    {
                        "symbol": p.symbol,
                        "quantity": p.quantity,
                        "average_price": p.average_price,
                        "price": p.price,
                        "market_value": p.market_value,
                    }
                    for p in account.positions
                ],
            }
        )
    return document


def _assets(competition: Competition) -> str:
    return ", ".join(competition.symbols) if competition.symbols else "every asset"


def _describe(competition: Competition) -> str:
    lines = [
        f"{competition.name} ({'private' if competition.private else 'public'}, "
        f"{competition.status})",
        f"  from {fmt.when(competition.starts_at)} to {fmt.when(competition.ends_at)}",
        f"  starting cash {fmt.money(competition.starting_cash)}; trades {_assets(competition)}",
        f"  {competition.members} member{'s' if competition.members != 1 else ''}"
        + ("; you are in it" if competition.joined else ""),
    ]
    if competition.join_code:
        lines.append(f"  join code: {competition.join_code} (students: "
                     f"`pt client competitions join --code {competition.join_code}`)")  # fmt: skip
    return "\n".join(lines)


@client.group(invoke_without_command=True)
@json_option
@click.pass_context
def competitions(ctx: click.Context, as_json: bool) -> None:
    """Trading competitions: list them (no subcommand), create, join, leave, show.

    A competition has its own account for each member, apart from your practice
    account: trade in it with `pt client buy SYMBOL QTY --competition NAME`.
    """
    if ctx.invoked_subcommand is not None:
        return
    options = _options()
    stored = _stored_session(options)
    with _server_errors(options), options.connect(stored.session_id) as conn:
        found = conn.competitions()
    if _wants_json(as_json):
        print_json([competition_document(c) for c in found])
        return
    if not found:
        click.echo("No competitions yet: `pt client competitions create --help`.")
        return
    rows = [
        [
            c.name, c.status, "private" if c.private else "public", fmt.when(c.ends_at),
            fmt.money(c.starting_cash), str(c.members), "yes" if c.joined else "",
        ]
        for c in found
    ]  # fmt: skip
    headers = ["Name", "Status", "Kind", "Ends", "Starting cash", "Members", "Joined"]
    click.echo(fmt.table(headers, rows, right={4, 5}))


@competitions.command("create")
@click.argument("name")
@terms_options
@json_option
def create(
    name: str,
    ends_at: datetime,
    starts_at: datetime | None,
    starting_cash: Decimal | None,
    symbols: str,
    private: bool,
    as_json: bool,
) -> None:
    """Create competition NAME. You are not a member until you join it (a teacher need
    not); a private one prints the join code to give to its members."""
    options = _options()
    stored = _stored_session(options)
    listed = [s.strip() for s in symbols.split(",") if s.strip()]
    with _server_errors(options), options.connect(stored.session_id) as conn:
        created = conn.create_competition(
            name, ends_at, starts_at=starts_at, starting_cash=starting_cash, symbols=listed,
            private=private,
        )  # fmt: skip
    if _wants_json(as_json):
        print_json(competition_document(created))
        return
    click.echo(f"Created competition {_describe(created)}")


@competitions.command("join")
@click.argument("name", required=False, default="")
@click.option("--code", default="", help="The join code of a private competition.")
@json_option
def join(name: str, code: str, as_json: bool) -> None:
    """Join public competition NAME, or a private one with --code."""
    if not name and not code:
        raise click.UsageError("name a public competition, or give --code")
    options = _options()
    stored = _stored_session(options)
    with _server_errors(options), options.connect(stored.session_id) as conn:
        joined = conn.join_competition(name, code)
    if _wants_json(as_json):
        print_json(competition_document(joined))
        return
    click.echo(f"You are in competition {_describe(joined)}")
    click.echo(f"Trade with `pt client buy SYMBOL QTY --competition {joined.name!r}`.")


@competitions.command("leave")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
def leave(name: str, yes: bool, as_json: bool) -> None:
    """Leave competition NAME: your account in it, its positions and orders, are closed."""
    if not yes and not _wants_json(as_json):
        click.confirm(f"Leave {name!r} and close your account in it?", abort=True)
    options = _options()
    stored = _stored_session(options)
    with _server_errors(options), options.connect(stored.session_id) as conn:
        message = conn.leave_competition(name)
    if _wants_json(as_json):
        print_json({"left": name, "message": message})
    else:
        click.echo(message[0].upper() + message[1:] + ".")


@competitions.command("show")
@click.argument("name")
@json_option
def show(name: str, as_json: bool) -> None:
    """Competition NAME, and your account in it if you joined."""
    options = _options()
    stored = _stored_session(options)
    with _server_errors(options), options.connect(stored.session_id) as conn:
        found = conn.competition(name)
    if _wants_json(as_json):
        print_json(competition_document(found))
        return
    click.echo(_describe(found))
    account = found.account
    if account is None:
        return
    click.echo(
        f"  your account: rank {account.rank}, cash {fmt.money(account.cash)}, "
        f"equity {fmt.money(account.equity)}, return {account.return_percent}%"
    )
    if account.positions:
        rows = [
            [p.symbol, str(p.quantity), fmt.price(p.average_price), fmt.price(p.price),
             fmt.money(p.market_value)]
            for p in account.positions
        ]  # fmt: skip
        click.echo(fmt.table(["Symbol", "Qty", "Avg cost", "Price", "Value"], rows, {1, 2, 3, 4}))


def leaderboard_document(board: Leaderboard) -> dict[str, Any]:
    return fmt.document(
        {
            "competition": board.competition,
            "status": board.status,
            "starting_cash": board.starting_cash,
            "members": board.members,
            "priced_at": board.priced_at,
            "your_rank": board.your_rank,
            "entries": [
                {
                    "rank": e.rank,
                    "username": e.username,
                    "equity": e.equity,
                    "gain": e.gain,
                    "return": e.return_,
                    "return_percent": e.return_percent,
                }
                for e in board.entries
            ],
        }
    )


@client.command()
@click.argument("competition", required=False, default="")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True,
              help="At most this many places, best first.")  # fmt: skip
@json_option
def leaderboard(competition: str, limit: int, as_json: bool) -> None:
    """COMPETITION's members ranked by return: (equity - starting cash) / starting cash,
    equity at the master's current prices. Without COMPETITION: the one you are in,
    if you are in exactly one that has not ended."""
    options = _options()
    stored = _stored_session(options)
    with _server_errors(options), options.connect(stored.session_id) as conn:
        if not competition:
            mine = [c.name for c in conn.competitions() if c.joined and c.status != "ended"]
            if len(mine) != 1:
                fail(
                    "name the competition: you are in "
                    + (", ".join(repr(n) for n in mine) if mine else "none")
                    + " (`pt client competitions`)"
                )
            competition = mine[0]
        board = conn.leaderboard(competition, limit)
    if _wants_json(as_json):
        print_json(leaderboard_document(board))
        return
    click.echo(
        f"{board.competition} ({board.status}): {board.members} member"
        f"{'s' if board.members != 1 else ''}, starting cash {fmt.money(board.starting_cash)}"
        + (f"; you are #{board.your_rank}" if board.your_rank is not None else "")
    )
    if not board.entries:
        click.echo("No members yet.")
        return
    rows = [
        [str(e.rank), e.username, fmt.money(e.equity), fmt.money(e.gain),
         f"{e.return_percent:+}%"]
        for e in board.entries
    ]  # fmt: skip
    click.echo(fmt.table(["Rank", "User", "Equity", "Gain", "Return"], rows, right={0, 2, 3, 4}))
    click.echo(f"Prices as of {fmt.when(board.priced_at)}.")
