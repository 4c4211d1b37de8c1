"""``pt client buy/sell/order/orders/cancel``: orders from the terminal, told honestly.

Every order gets a client order id before anything is sent (``--client-order-id``
to choose it): running the same command again with the same id can never
place a second order. Whenever the outcome cannot be known (no answer in
time, a lost connection, Ctrl-C, a worker or store that could not tell), the
command says so with that id and exits with status 3, never "rejected":

    outcome unknown: order <id>; check with `pt client order <id>`

Exit status: 0 done, 1 refused (the order, or the cancel), 2 a bad command
line (a quantity or price the wire cannot carry included), 3 outcome unknown.
"""

from __future__ import annotations

import sys
import uuid
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, NoReturn

import click

from .client import client
from .client import options as _options
from .client import server_errors as _server_errors
from .client import stored_session as _stored_session
from .client import wants_json as _wants_json
from .client_format import CENTS
from .client_format import money as _money
from .client_format import price as _price
from .client_format import table as _table
from .client_format import text as _text
from .client_format import when as _when
from .common import fail, json_option, print_json

if TYPE_CHECKING:  # imported when a command runs: `pt --help` stays quick
    from papertrader.client import ClientError, OrderStatus

#: Exit status when an order's outcome is unknown (documented in the README).
EXIT_OUTCOME_UNKNOWN = 3
#: The largest quantity an INT on the wire can carry.
MAX_WIRE_INT = 2**63 - 1
#: A DECIMAL on the wire is at most 64 characters of text.
MAX_DECIMAL_TEXT = 64

_TYPES = {
    (False, False): "market",
    (True, False): "limit",
    (False, True): "stop",
    (True, True): "stop_limit",
}


class PriceType(click.ParamType[Decimal, Any]):
    """A positive decimal price, exact (never a float), that the wire can carry."""

    name = "PRICE"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> Decimal:
        if isinstance(value, Decimal):
            return value
        text = str(value).strip()
        try:
            price = Decimal(text)
        except InvalidOperation:
            self.fail(f"{text!r} is not a number", param, ctx)
        if not price.is_finite() or price <= 0:
            self.fail(f"{text!r} is not a price above 0", param, ctx)
        if len(format(price, "f")) > MAX_DECIMAL_TEXT:
            self.fail(f"{text!r} has too many digits", param, ctx)
        return price


PRICE = PriceType()


#: Which account an order command acts on: the practice account, or a competition's.
COMPETITION_OPTION = click.option(
    "--competition",
    default="",
    metavar="NAME",
    help="Trade in (or list, cancel) your account in this competition instead of your "
    "practice account (`pt client competitions`).",
)


def order_document(state: OrderStatus) -> dict[str, Any]:
    """An order for --json: every field, money as strings."""
    return {
        "order_id": str(state.order_id),
        "client_order_id": str(state.client_order_id),
        "status": state.status,
        "code": state.code,
        "reason": state.reason or None,
        "side": state.side,
        "symbol": state.symbol,
        "quantity": state.quantity,
        "type": state.order_type,
        "time_in_force": state.time_in_force,
        "limit_price": _text(state.limit_price),
        "stop_price": _text(state.stop_price),
        "price": _text(state.price),
        "amount": _text(state.amount),
        "realized_pnl": _text(state.realized_pnl),
        "reserved_cash": _text(state.reserved_cash),
        "reserved_quantity": state.reserved_quantity,
        "received_at": _text(state.received_at),
        "accepted_at": _text(state.accepted_at),
        "triggered_at": _text(state.triggered_at),
        "decided_at": _text(state.decided_at),
        "executed_at": _text(state.executed_at),
        "expires_at": _text(state.expires_at),
    }


def _describe(state: OrderStatus) -> str:
    """'limit buy 10 AAPL at 150.00' and the like."""
    kind = state.order_type.replace("_", "-")
    terms = ""
    if state.stop_price is not None:
        terms += f" stop {_price(state.stop_price)}"
    if state.limit_price is not None:
        terms += f" limit {_price(state.limit_price)}"
    return f"{kind} {state.side} {state.quantity} {state.symbol}{terms}"


def _unknown(order_id: uuid.UUID | None, detail: str, as_json: bool) -> NoReturn:
    """The one way every command reports an outcome it cannot know."""
    if order_id is None:
        message = "outcome unknown; check with `pt client orders --open`"
    else:
        message = f"outcome unknown: order {order_id}; check with `pt client order {order_id}`"
    if as_json:
        shown = None if order_id is None else str(order_id)
        print_json({"status": "unknown", "client_order_id": shown, "reason": detail})
    else:
        click.echo(f"error: {message}", err=True)
        click.echo(f"  ({detail})", err=True)
    sys.exit(EXIT_OUTCOME_UNKNOWN)


def _refused(
    what: str, exc: ClientError, as_json: bool, terms: dict[str, Any] | None = None
) -> NoReturn:
    """A refused order or cancel: one line (exit 1), or its JSON document."""
    if as_json:
        document: dict[str, Any] = {
            "status": "rejected",
            "code": exc.code.name,
            "reason": exc.reason,
            "order_id": None if exc.order_id is None else str(exc.order_id),
            "price": None,
            "executed_at": None,
            **(terms or {}),
        }
        print_json(document)
        sys.exit(1)
    if what.startswith("cancel"):
        fail(f"cannot {what}: {exc.reason}")
    order = f" (order {exc.order_id})" if exc.order_id else ""
    fail(f"{what} rejected: {exc.reason}{order}")


def _report(state: OrderStatus, as_json: bool) -> None:
    if as_json:
        print_json(order_document(state))
        return
    if state.status == "filled" and state.price is not None:
        verb = "Bought" if state.side == "buy" else "Sold"
        total = state.amount
        if total is None:
            total = (state.price * state.quantity).quantize(CENTS, rounding=ROUND_HALF_EVEN)
        click.echo(
            f"{verb} {state.quantity} {state.symbol} at {_price(state.price)} = {_money(total)} "
            f"({_when(state.executed_at)}, order {state.client_order_id})"
        )
        return
    if state.status == "open":
        until = (
            f"good until {_when(state.expires_at)}"
            if state.time_in_force == "day"
            else "good till canceled"
        )
        held = (
            f"{_money(state.reserved_cash)} reserved"
            if state.side == "buy"
            else f"{state.reserved_quantity} {state.symbol} reserved"
        )
        click.echo(f"Open: {_describe(state)}, {until}; {held} (order {state.client_order_id})")
        return
    click.echo(f"Order {state.client_order_id} ({_describe(state)}) is {state.status}.")


def _place(
    side: str,
    symbol: str,
    quantity: int,
    limit: Decimal | None,
    stop: Decimal | None,
    time_in_force: str,
    client_order_id: uuid.UUID | None,
    as_json: bool,
    competition: str = "",
) -> None:
    from papertrader.client import ClientError, OrderOutcomeUnknown
    from papertrader.protocol import ErrorCode

    options = _options()
    as_json = _wants_json(as_json)
    stored = _stored_session(options)
    cid = client_order_id or uuid.uuid4()
    order_type = _TYPES[(limit is not None, stop is not None)]
    what = f"{side} {quantity} {symbol.upper()}"
    try:
        with _server_errors(options), options.connect(stored.session_id) as conn:
            try:
                state = conn.place_order(
                    side,  # type: ignore[arg-type]
                    symbol.upper(),
                    quantity,
                    order_type=order_type,
                    limit_price=limit,
                    stop_price=stop,
                    time_in_force=time_in_force,
                    client_order_id=cid,
                    competition=competition,
                )
            except OrderOutcomeUnknown as exc:
                _unknown(cid, exc.reason, as_json)
            except ClientError as exc:
                if exc.session_problem or exc.code is ErrorCode.UNAVAILABLE:
                    raise
                terms = {
                    "client_order_id": str(cid),
                    "side": side,
                    "symbol": symbol.upper(),
                    "quantity": quantity,
                    "type": order_type,
                }
                _refused(what, exc, as_json, terms)
    except KeyboardInterrupt:
        _unknown(cid, "interrupted before the answer came", as_json)
    _report(state, as_json)


def _order_options(command: Any) -> Any:
    for decorator in reversed(
        (
            click.argument("symbol"),
            click.argument("quantity", metavar="QTY", type=click.IntRange(1, MAX_WIRE_INT)),
            click.option(
                "--limit",
                "limit",
                type=PRICE,
                default=None,
                help="Limit price: buy at this price or lower, sell at this price or higher.",
            ),
            click.option(
                "--stop",
                "stop",
                type=PRICE,
                default=None,
                help="Stop price: the order becomes active once the price reaches it "
                "(with --limit: a stop-limit order).",
            ),
            click.option(
                "--tif",
                "time_in_force",
                type=click.Choice(["day", "gtc"]),
                default="day",
                show_default=True,
                help="Time in force of a limit or stop order: day (until the market's next "
                "close) or gtc (good till canceled).",
            ),
            click.option(
                "--client-order-id",
                type=click.UUID,
                default=None,
                help="Your id for this order (a UUID; default: a new one). Sending an order "
                "again with the same id never places a second one.",
            ),
            COMPETITION_OPTION,
            json_option,
        )
    ):
        command = decorator(command)
    return command


@client.command()
@_order_options
def buy(
    symbol: str,
    quantity: int,
    limit: Decimal | None,
    stop: Decimal | None,
    time_in_force: str,
    client_order_id: uuid.UUID | None,
    competition: str,
    as_json: bool,
) -> None:
    """Buy QTY units of SYMBOL: at the next update interval's price (a market order),
    or as a limit / stop / stop-limit order that waits for its price."""
    _place(
        "buy", symbol, quantity, limit, stop, time_in_force, client_order_id, as_json, competition
    )


@client.command()
@_order_options
def sell(
    symbol: str,
    quantity: int,
    limit: Decimal | None,
    stop: Decimal | None,
    time_in_force: str,
    client_order_id: uuid.UUID | None,
    competition: str,
    as_json: bool,
) -> None:
    """Sell QTY units of SYMBOL; see `buy` for the order types."""
    _place(
        "sell", symbol, quantity, limit, stop, time_in_force, client_order_id, as_json, competition
    )


def _order_rows(states: list[OrderStatus]) -> list[list[str]]:
    return [
        [
            str(s.client_order_id),
            s.status,
            s.side,
            s.symbol,
            str(s.quantity),
            s.order_type.replace("_", "-"),
            _price(s.limit_price) if s.limit_price is not None else "-",
            _price(s.stop_price) if s.stop_price is not None else "-",
            _price(s.price) if s.price is not None else "-",
            _when(s.decided_at or s.accepted_at or s.received_at),
        ]
        for s in states
    ]


_ORDER_HEADERS = [
    "ORDER",
    "STATUS",
    "SIDE",
    "SYMBOL",
    "QTY",
    "TYPE",
    "LIMIT",
    "STOP",
    "FILLED AT",
    "UPDATED",
]


@client.command()
@click.argument("order_id", metavar="ID", type=click.UUID)
@json_option
def order(order_id: uuid.UUID, as_json: bool) -> None:
    """The state of your order ID (its client order id, or the order id of the history),
    with the time of every change."""
    options = _options()
    stored = _stored_session(options)
    with _server_errors(options), options.connect(stored.session_id) as conn:
        state = conn.order(order_id)
    if _wants_json(as_json):
        print_json(order_document(state))
        return
    click.echo(f"Order {state.client_order_id}: {_describe(state)}, {state.time_in_force}")
    status = state.status.upper()
    if state.reason:
        status += f" ({state.reason})"
    click.echo(f"Status       {status}")
    if state.price is not None:
        click.echo(
            f"Filled at    {_price(state.price)} = {_money(state.amount)}"
            + (f", realized {_money(state.realized_pnl)}" if state.realized_pnl is not None else "")
        )
    if state.reserved_cash:
        click.echo(f"Reserved     {_money(state.reserved_cash)}")
    if state.reserved_quantity:
        click.echo(f"Reserved     {state.reserved_quantity} {state.symbol}")
    for label, moment in (
        ("Queued", state.received_at),
        ("Accepted", state.accepted_at),
        ("Triggered", state.triggered_at),
        ("Executed", state.executed_at),
        ("Decided", state.decided_at if state.executed_at is None else None),
        ("Expires", state.expires_at if state.status == "open" else None),
    ):
        if moment is not None:
            click.echo(f"{label:<12} {_when(moment)}")
    if state.order_id != state.client_order_id:
        click.echo(f"Order id     {state.order_id} (in the history)")


@client.command()
@click.option(
    "--open", "open_only", is_flag=True, help="Only orders still waiting (queued or open)."
)
@click.option(
    "--limit",
    type=click.IntRange(1, 1000),
    default=100,
    show_default=True,
    help="At most this many, newest first.",
)
@COMPETITION_OPTION
@json_option
def orders(open_only: bool, limit: int, competition: str, as_json: bool) -> None:
    """Your orders, newest first (of your practice account, or of a competition's)."""
    options = _options()
    stored = _stored_session(options)
    with _server_errors(options), options.connect(stored.session_id) as conn:
        states = conn.orders(open_only=open_only, limit=limit, competition=competition)
    if _wants_json(as_json):
        print_json([order_document(s) for s in states])
        return
    if not states:
        click.echo("No open orders." if open_only else "No orders yet.")
        return
    click.echo(_table(_ORDER_HEADERS, _order_rows(states), right={4, 6, 7, 8}))


@client.command()
@click.argument("order_id", metavar="[ID]", type=click.UUID, required=False)
@click.option(
    "--all", "cancel_all", is_flag=True, help="Cancel every order of yours still waiting."
)
@COMPETITION_OPTION
@json_option
def cancel(order_id: uuid.UUID | None, cancel_all: bool, competition: str, as_json: bool) -> None:
    """Cancel order ID while it still waits (a market order before its drain, a limit or
    stop order before it fills), or every waiting order with --all."""
    if cancel_all == (order_id is not None):
        raise click.UsageError("name one order ID, or --all")
    from papertrader.client import ClientError, OrderOutcomeUnknown
    from papertrader.protocol import ErrorCode

    options = _options()
    as_json = _wants_json(as_json)
    stored = _stored_session(options)
    try:
        with _server_errors(options), options.connect(stored.session_id) as conn:
            try:
                if cancel_all:
                    count = conn.cancel_all(competition=competition)
                else:
                    assert order_id is not None
                    state = conn.cancel(order_id)
            except OrderOutcomeUnknown as exc:
                _unknown(order_id, exc.reason, as_json)
            except ClientError as exc:
                if exc.session_problem or exc.code is ErrorCode.UNAVAILABLE:
                    raise
                _refused(f"cancel order {order_id}", exc, as_json)
    except KeyboardInterrupt:
        _unknown(order_id, "interrupted before the answer came", as_json)
    if cancel_all:
        if as_json:
            print_json({"canceled": count})
        else:
            click.echo(f"Canceled {count} order{'s' if count != 1 else ''}.")
        return
    if as_json:
        print_json(order_document(state))
    else:
        click.echo(f"Canceled order {state.client_order_id} ({_describe(state)}).")
