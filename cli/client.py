"""``pt client``: trade from the terminal against a running worker.

``login`` stores the session in a file (mode 0600) and every later command
sends it, so a shell session feels like a logged-in app. Tables for people,
``--json`` (exactly one document, money as strings) for scripts.

Exit status: 0 done, 1 the server said no (rejected order, wrong password,
expired session) or could not be reached, 2 the command line was wrong, 3 the
outcome of an order (or a cancel) is unknown: it may still go through, so it
must not be placed again as a new order; `pt client order ID` tells what
became of it (cli/client_orders.py).
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import click

from papertrader.client import (
    ClientError,
    FailoverClient,
    PaperTraderClient,
    ServerUnreachable,
    parse_address,
)
from papertrader.client.session_file import (
    SessionFileError,
    StoredSession,
    default_session_file,
    delete_session,
    load_session,
    save_session,
)
from papertrader.market.forecast import MAX_HORIZON
from papertrader.market.quote import Quote
from papertrader.market.ranges import RANGE_NAMES

from .charts import bars_rows, forecast_chart, price_chart
from .common import fail, json_option, print_json

DEFAULT_WORKER = "127.0.0.1:2049"
CENTS = Decimal("0.01")


@dataclass
class ClientOptions:
    """The group's options, handed to every command through click's context."""

    host: str
    port: int
    worker: str
    session_file: Path
    timeout: float
    as_json: bool
    #: With --master: find a worker through the master and fail over between workers.
    master: tuple[str, int] | None = None
    region: str | None = None

    def connect(self, session_id: uuid.UUID | None = None) -> PaperTraderClient | FailoverClient:
        if self.master is not None:
            host, port = self.master
            return FailoverClient(host, port, self.region, self.timeout, session_id=session_id)
        return PaperTraderClient(self.host, self.port, self.timeout, session_id=session_id)


def _master_address(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[str, int] | None:
    if value is None:
        return None
    try:
        return parse_address(value, default_port=2048)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def _worker_address(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, int]:
    try:
        return parse_address(value, default_port=2049)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


@click.group()
@click.option(
    "--worker",
    "worker",
    envvar="PT_WORKER",
    default=DEFAULT_WORKER,
    show_default=True,
    callback=_worker_address,
    metavar="HOST:PORT",
    help="The worker to talk to (also PT_WORKER). Any worker serves any session.",
)
@click.option(
    "--master",
    "master",
    envvar="PT_CLIENT_MASTER",
    default=None,
    callback=_master_address,
    metavar="HOST:PORT",
    help="Ask this master for its workers instead of using --worker, and move to "
    "another worker (same session) when one goes away (also PT_CLIENT_MASTER).",
)
@click.option(
    "--region",
    default=None,
    help="With --master: prefer workers of this region.",
)
@click.option(
    "--session-file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="PT_SESSION_FILE",
    default=None,
    help="Where `login` keeps the session (also PT_SESSION_FILE; default: "
    "session.json in the user's config directory). Created with mode 0600.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=90.0,
    show_default=True,
    help="Seconds to wait for an answer (orders wait for the next update interval).",
)
@json_option
@click.pass_context
def client(
    ctx: click.Context,
    worker: tuple[str, int],
    master: tuple[str, int] | None,
    region: str | None,
    session_file: Path | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Register, log in, look at quotes, buy and sell, from the terminal.

    Start with `pt client register USER --email E`, then `pt client login USER`.
    """
    host, port = worker
    ctx.obj = ClientOptions(
        host=host,
        port=port,
        worker=f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        session_file=session_file or default_session_file(),
        timeout=timeout,
        as_json=as_json,
        master=master,
        region=region,
    )


# -- shared plumbing ---------------------------------------------
def _options() -> ClientOptions:
    options = click.get_current_context().find_object(ClientOptions)
    assert options is not None
    return options


def _wants_json(as_json: bool) -> bool:
    return as_json or _options().as_json


@contextmanager
def _server_errors(options: ClientOptions) -> Iterator[None]:
    """Turn every expected ClientError into one line on stderr and exit status 1."""
    try:
        yield
    except ServerUnreachable as exc:
        if options.master is not None:  # the address is the master's, or several workers'
            fail(f"{exc.reason} (is the master running? `pt workers list` on its host)")
        hint = "" if exc.reason.startswith("connection to") else " (is the worker running? `pt up`)"
        fail(f"{exc.reason.replace('cannot reach ', 'cannot reach the worker at ', 1)}{hint}")
    except ClientError as exc:
        if exc.session_problem:
            delete_session(options.session_file)
            advice = exc.reason if "log in again" in exc.reason else f"{exc.reason}: log in again"
            fail(f"{advice} (`pt client login USER`)")
        if exc.retry_after is not None:
            fail(f"refused by an abuse limit: {exc.reason} (wait, then run the same command again)")
        fail(exc.reason)


def _stored_session(options: ClientOptions) -> StoredSession:
    try:
        stored = load_session(options.session_file)
    except SessionFileError as exc:
        fail(str(exc))
    if stored is None:
        fail("not logged in: run `pt client login USER` first")
    return stored


def _read_password(from_stdin: bool, confirm: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise click.UsageError("--password-stdin: no password on standard input")
        return password
    value: str = click.prompt("Password", hide_input=True, confirmation_prompt=confirm, err=True)
    return value


password_stdin_option = click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of standard input instead of prompting.",
)


# -- formatting ---------------------------------------------
def _text(value: Any) -> Any:
    """A JSON-ready copy: decimals as strings, times as ISO 8601, ids as text."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {key: _text(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_text(item) for item in value]
    return value


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def _money(amount: Decimal | None) -> str:
    if amount is None:
        return "-"
    return f"{amount.quantize(CENTS, rounding=ROUND_HALF_EVEN):,}"


def _price(price: Decimal | None) -> str:
    """Prices keep their significant decimals but at least two."""
    if price is None:
        return "-"
    normal = price.normalize()
    exponent = normal.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -2:
        normal = normal.quantize(CENTS)
    return f"{normal:,f}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(width) if index in right else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), *(line(row) for row in rows)])


def quote_document(quote: Quote) -> dict[str, Any]:
    return {
        "symbol": quote.symbol,
        "open": _text(quote.open),
        "high": _text(quote.high),
        "low": _text(quote.low),
        "close": _text(quote.close),
        "volume": quote.volume,
        "time": _text(quote.time),
    }


def portfolio_document(portfolio: dict[str, Any]) -> dict[str, Any]:
    positions = [
        {
            "symbol": p.get("symbol"),
            "quantity": p.get("quantity"),
            "average_price": _text(p.get("average_price")),
            "price": _text(p.get("price")),
            "market_value": _text(p.get("market_value")),
        }
        for p in portfolio.get("positions") or []
    ]
    return {
        "username": portfolio.get("username"),
        "cash": _text(portfolio.get("cash")),
        "positions": positions,
        "total_value": _text(portfolio.get("total_value")),
    }


def history_document(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "order_id": _text(row.get("order_id")),
            "side": row.get("side"),
            "symbol": row.get("symbol"),
            "quantity": row.get("quantity"),
            "price": _text(row.get("price")),
            "executed_at": _text(row.get("executed_at")),
        }
        for row in history
    ]


# -- accounts ---------------------------------------------
@client.command()
@click.argument("username")
@click.option("--email", required=True, help="E-mail address of the new account.")
@password_stdin_option
@json_option
def register(username: str, email: str, password_stdin: bool, as_json: bool) -> None:
    """Create the account USERNAME (the password is asked twice, hidden)."""
    options = _options()
    password = _read_password(password_stdin, confirm=True)
    with _server_errors(options), options.connect() as conn:
        stored_name = conn.register(username, email, password)
    if _wants_json(as_json):
        print_json({"username": stored_name})
    else:
        click.echo(f"Registered {stored_name}. Log in with `pt client login {stored_name}`.")


@client.command()
@click.argument("username", required=False)
@click.option("--remember", is_flag=True, help="Keep the session for weeks instead of an hour.")
@click.option(
    "--with",
    "provider",
    metavar="PROVIDER",
    default=None,
    help="Sign in with this provider (e.g. google) instead of a password; the first time, "
    "USERNAME (or --username) names the new account.",
)
@click.option("--username", "new_username", default=None, help="With --with: the same as USERNAME.")
@click.option("--device", is_flag=True, help="With --with: approve on another device with a code.")
@click.option("--paste", is_flag=True, help="With --with: the browser runs on another machine.")
@click.option("--no-browser", is_flag=True, help="With --with: print the address, open nothing.")
@password_stdin_option
@json_option
def login(
    username: str | None,
    remember: bool,
    provider: str | None,
    new_username: str | None,
    device: bool,
    paste: bool,
    no_browser: bool,
    password_stdin: bool,
    as_json: bool,
) -> None:
    """Log in as USERNAME (or with a provider) and keep the session for the next commands.

    `pt client login alice` asks for the password; `pt client login --with google`
    opens the provider's sign-in in a browser (see `pt client password --help` to
    add a password to such an account).
    """
    if provider is not None:
        from .client_account import login_with

        login_with(provider, new_username or username, remember, device, paste, no_browser, as_json)
        return
    if username is None:
        raise click.UsageError("name the USERNAME, or sign in with --with PROVIDER")
    options = _options()
    password = _read_password(password_stdin, confirm=False)
    with _server_errors(options), options.connect() as conn:
        info = conn.login(username, password, remember)
    save_session(
        options.session_file,
        StoredSession(info.session_id, info.username, info.expires_at, options.worker),
    )
    if _wants_json(as_json):
        print_json({"username": info.username, "expires_at": _text(info.expires_at)})
    else:
        click.echo(
            f"Logged in as {info.username}; the session lasts until {_when(info.expires_at)}."
        )


@client.command()
@json_option
def logout(as_json: bool) -> None:
    """End the session on every worker and forget it here."""
    options = _options()
    try:
        stored = load_session(options.session_file)
    except SessionFileError:
        stored = None  # unreadable: nothing we could end; the file goes below
    ended = False
    if stored is not None:
        try:
            with options.connect(stored.session_id) as conn:
                conn.logout()
            ended = True
        except ServerUnreachable as exc:
            fail(f"{exc.reason}; the session is still valid, try again when the worker is back")
        except ClientError as exc:
            if not exc.session_problem:
                fail(exc.reason)
    delete_session(options.session_file)
    if _wants_json(as_json):
        print_json({"logged_out": ended})
    elif stored is not None:
        click.echo(f"Logged out {stored.username}.")
    else:
        click.echo("Not logged in.")


@client.command()
@json_option
def whoami(as_json: bool) -> None:
    """Who the stored session belongs to, checked with the worker."""
    options = _options()
    stored = _stored_session(options)
    with _server_errors(options), options.connect() as conn:
        info = conn.resume(stored.session_id)
    if _wants_json(as_json):
        print_json(
            {
                "username": info.username,
                "expires_at": _text(info.expires_at),
                "worker": options.worker,
            }
        )
    else:
        click.echo(f"{info.username} (session valid until {_when(info.expires_at)})")


# -- market data ---------------------------------------------
range_option = click.option(
    "--range",
    "range_",
    type=click.Choice(RANGE_NAMES),
    default=None,
    help="day: minute bars of the date; week, month: daily bars up to it; "
    "year: monthly bars up to it; all: monthly bars of everything.",
)
date_option = click.option(
    "--date",
    "on",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="The UTC day the range ends on, YYYY-MM-DD (default: today).",
)


def bars_document(symbol: str, range_: str, bars: list[dict[str, Any]]) -> dict[str, Any]:
    return {"symbol": symbol, "range": range_, "bars": [_text(bar) for bar in bars]}


def _price_history(symbol: str, range_: str, on: datetime | None) -> list[dict[str, Any]]:
    options = _options()
    stored = _stored_session(options)
    with _server_errors(options), options.connect(stored.session_id) as conn:
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
        if _wants_json(as_json):
            print_json(bars_document(symbol, shown_range, bars))
        else:
            click.echo(price_chart(symbol, bars, shown_range))
        return
    options = _options()
    stored = _stored_session(options)
    quotes: list[Quote] = []
    with _server_errors(options), options.connect(stored.session_id) as conn:
        for symbol in symbols:
            quotes.append(conn.quote(symbol.upper()))
    if _wants_json(as_json):
        documents = [quote_document(q) for q in quotes]
        print_json(documents[0] if len(documents) == 1 else documents)
        return
    rows = [
        [
            q.symbol,
            _price(q.open),
            _price(q.high),
            _price(q.low),
            _price(q.close),
            f"{q.volume:,}",
            _when(q.time),
        ]
        for q in quotes
    ]
    headers = ["SYMBOL", "OPEN", "HIGH", "LOW", "CLOSE", "VOLUME", "TIME"]
    click.echo(_table(headers, rows, right={1, 2, 3, 4, 5}))


# -- account data ---------------------------------------------
@client.command()
@click.argument("username", required=False, default="")
@json_option
def portfolio(username: str, as_json: bool) -> None:
    """Cash, positions and their value (yours, or USERNAME's positions)."""
    options = _options()
    stored = _stored_session(options)
    with _server_errors(options), options.connect(stored.session_id) as conn:
        result = conn.portfolio(username)
    if _wants_json(as_json):
        print_json(portfolio_document(result))
        return
    positions = result.get("positions") or []
    click.echo(f"Portfolio of {result.get('username')}")
    if result.get("cash") is not None:
        click.echo(f"Cash         {_money(result['cash'])}")
    if positions:
        rows = [
            [
                str(p.get("symbol")),
                f"{p.get('quantity')}",
                _price(p.get("average_price")),
                _price(p.get("price")),
                _money(p.get("market_value")),
            ]
            for p in positions
        ]
        headers = ["SYMBOL", "QTY", "AVG PRICE", "PRICE", "VALUE"]
        click.echo(_table(headers, rows, right={1, 2, 3, 4}))
    else:
        click.echo("No positions.")
    if result.get("total_value") is not None:
        click.echo(f"Total value  {_money(result['total_value'])}")


@client.command()
@click.argument("username", metavar="[USERNAME | SYMBOL]", required=False, default="")
@range_option
@date_option
@json_option
def history(username: str, range_: str | None, on: datetime | None, as_json: bool) -> None:
    """Executed orders, oldest first (yours, or USERNAME's).

    With --range or --date: the price bars of SYMBOL instead
    (`pt client history AAPL --range week`).
    """
    if range_ or on:
        if not username:
            raise click.UsageError("--range/--date show prices: name the SYMBOL")
        symbol, shown_range = username.upper(), range_ or "day"
        bars = _price_history(symbol, shown_range, on)
        if _wants_json(as_json):
            print_json(bars_document(symbol, shown_range, bars))
        else:
            headers = ["TIME (UTC)", "OPEN", "HIGH", "LOW", "CLOSE", "VOLUME"]
            click.echo(f"{symbol} {shown_range}: {len(bars)} bars")
            click.echo(_table(headers, bars_rows(bars, _price), right={1, 2, 3, 4, 5}))
        return
    options = _options()
    stored = _stored_session(options)
    with _server_errors(options), options.connect(stored.session_id) as conn:
        rows = conn.history(username)
    if _wants_json(as_json):
        print_json(history_document(rows))
        return
    if not rows:
        click.echo("No transactions yet.")
        return
    table = [
        [
            _when(row.get("executed_at")),
            str(row.get("side")),
            str(row.get("symbol")),
            f"{row.get('quantity')}",
            _price(row.get("price")),
            str(row.get("order_id") or "-"),
        ]
        for row in rows
    ]
    headers = ["EXECUTED", "SIDE", "SYMBOL", "QTY", "PRICE", "ORDER"]
    click.echo(_table(headers, table, right={3, 4}))


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
    options = _options()
    stored = _stored_session(options)
    symbol = symbol.upper()
    with _server_errors(options), options.connect(stored.session_id) as conn:
        result = conn.forecast(symbol, horizon)
    if _wants_json(as_json):
        print_json(_text(result))
        return
    points = result.get("points") or []
    if chart:
        click.echo(forecast_chart(symbol, [result["last_close"]], result))
    click.echo(
        f"{symbol}: last close {_price(result.get('last_close'))}; "
        f"{result.get('method')} over {result.get('based_on')} bars "
        f"(alpha {result.get('alpha')}, beta {result.get('beta')})"
    )
    rows = [
        [
            str(p.get("step")),
            _when(p.get("time")),
            _price(p.get("value")),
            _price(p.get("lower")),
            _price(p.get("upper")),
        ]
        for p in points
    ]
    click.echo(_table(["STEP", "TIME", "FORECAST", "LOWER", "UPPER"], rows, right={0, 2, 3, 4}))
    click.echo("A naive model for practice, not investment advice.")


# The account commands (password, sessions, link, account) and the order commands (buy,
# sell, order, orders, cancel) live in their own modules; importing them registers them.
from . import client_account as _client_account  # noqa: E402,F401
from . import client_orders as _client_orders  # noqa: E402,F401
