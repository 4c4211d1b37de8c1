"""User data for data-transfer requests: user info, portfolio and transaction history.

The worker forwards the request with the client's session id; the master
resolves the session (the worker already checked the client's IP) and answers
DATA packets or DATA_FAIL. An empty username means the session's own user.
Another user's data is shown only if that user made their profile public
(SET_PROFILE_VISIBILITY, `pt client profile public`), and then the public
part only: no e-mail, no cash, no average prices, no order ids. A private
profile is answered exactly like a user who does not exist.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from papertrader.master.accounts import USERNAME_RE
from papertrader.master.context import MasterContext
from papertrader.protocol import ErrorCode, Instruction, Message, max_chunk_size, packets_for
from papertrader.protocol.records import to_record
from papertrader.protocol.values import Value
from papertrader.store import accounts as account_store
from papertrader.store import equity as equity_store
from papertrader.store import portfolio as portfolio_store
from papertrader.store import profiles
from papertrader.store.accounts import Account
from papertrader.store.sessions import SessionError

CENT = Decimal("0.01")


class DataError(Exception):
    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def tidy_price(value: Decimal) -> Decimal:
    """Prices are stored with 6 places; show 2 when the rest are zeros (150.250000 -> 150.25)."""
    cents = value.quantize(CENT)
    return cents if cents == value else value.normalize()


def money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_EVEN)


def resolve_target(ctx: MasterContext, request: Message) -> tuple[Account, bool]:
    """The account asked about and whether it is the session's own."""
    try:
        session = ctx.sessions.get(request.session_id, client_ip=None)
    except SessionError as exc:
        raise DataError(exc.code, exc.reason) from None
    username = str(request.arg("username")).strip()
    if not username or username.lower() == session.username.lower():
        account = account_store.get_account(ctx.pool, session.account_id)
        if account is None:
            raise DataError(ErrorCode.INVALID_SESSION, "the session's account no longer exists")
        return account, True
    account = None
    if USERNAME_RE.fullmatch(username):
        account = account_store.find_account_by_username(ctx.pool, username)
    # A private profile looks exactly like a user who does not exist.
    if account is None or not profiles.is_public(ctx.pool, account.id):
        raise DataError(ErrorCode.UNKNOWN_USER, f"there is no user {username[:24]}")
    return account, account.id == session.account_id


def user_info(ctx: MasterContext, account: Account, own: bool) -> Value:
    if own:
        return to_record(
            {
                "username": account.username,
                "email": account.email,
                "is_password": account.is_password,
                "cash": account.cash,
                "created_at": account.created_at,
                "public_profile": profiles.is_public(ctx.pool, account.id),
            }
        )
    return to_record({"username": account.username, "created_at": account.created_at})


def _percent(part: Decimal, whole: Decimal) -> Decimal | None:
    return None if not whole else (part * 100 / whole).quantize(CENT, rounding=ROUND_HALF_EVEN)


def portfolio(ctx: MasterContext, account: Account, own: bool) -> Value:
    """Positions valued at the master's current quotes (market value rounded to cents).

    The owner also gets what each position cost (average cost x units), its
    unrealised profit or loss in money and percent, and the account's cash,
    the cash open orders reserve, the realised profit or loss of its sells and
    its equity (cash + market value).
    """
    snapshot = ctx.quotes.snapshot()
    rows: list[dict[str, Any]] = []
    total = account.cash
    unrealized = Decimal("0.00")
    for position in portfolio_store.positions(ctx.pool, account.id):
        price = snapshot.price(position.symbol)
        value = None if price is None else money(position.quantity * price)
        if value is not None:
            total += value
        row: dict[str, Any] = {"symbol": position.symbol, "quantity": position.quantity}
        if own:
            cost = money(position.quantity * position.average_price)
            gain = None if value is None else value - cost
            unrealized += gain or 0
            row["average_price"] = tidy_price(position.average_price)
            row["cost_basis"] = cost
            row["reserved_quantity"] = position.reserved_quantity
            row["unrealized_pnl"] = gain
            row["unrealized_pnl_percent"] = None if gain is None else _percent(gain, cost)
        row["price"] = price
        row["market_value"] = value
        rows.append(row)
    if not own:
        return to_record({"username": account.username, "positions": rows})
    ledger = portfolio_store.ledger(ctx.pool, account.id)
    now = datetime.now(timezone.utc)
    opening = equity_store.before(
        ctx.pool, account.id, now.replace(hour=0, minute=0, second=0, microsecond=0)
    )
    day_change = None if opening is None else money(total) - opening
    return to_record(
        {
            "username": account.username,
            "cash": account.cash,
            "reserved_cash": ledger.reserved_cash,
            "available_cash": account.cash - ledger.reserved_cash,
            "positions": rows,
            "total_value": money(total),
            "equity": money(total),
            "realized_pnl": ledger.realized_pnl,
            "unrealized_pnl": unrealized,
            "day_change": day_change,
            "day_change_percent": (
                None if opening is None or day_change is None else _percent(day_change, opening)
            ),
            "priced_at": snapshot.updated_at,
        }
    )


def history(ctx: MasterContext, account: Account, own: bool) -> Value:
    entries = portfolio_store.history(ctx.pool, account.id)
    if own:
        return tuple(
            to_record(
                {
                    "order_id": e.order_id,
                    "side": e.side,
                    "symbol": e.symbol,
                    "quantity": e.quantity,
                    "price": tidy_price(e.price),
                    "amount": e.amount,
                    "received_at": e.received_at,
                    "executed_at": e.executed_at,
                }
            )
            for e in entries
        )
    return tuple(
        to_record(
            {
                "side": e.side,
                "symbol": e.symbol,
                "quantity": e.quantity,
                "price": tidy_price(e.price),
                "executed_at": e.executed_at,
            }
        )
        for e in entries
    )


_BUILDERS = {
    Instruction.GET_USER_INFO: user_info,
    Instruction.GET_USER_PORTFOLIO: portfolio,
    Instruction.GET_USER_TRANSACTION_HISTORY: history,
}


def handle_user_data(ctx: MasterContext, request: Message) -> list[Message]:
    """GET_USER_INFO / GET_USER_PORTFOLIO / GET_USER_TRANSACTION_HISTORY."""
    try:
        account, own = resolve_target(ctx, request)
    except DataError as exc:
        return [
            Message(
                Instruction.DATA_FAIL, (int(exc.code), exc.reason), request_id=request.request_id
            )
        ]
    value = _BUILDERS[request.instruction](ctx, account, own)
    return packets_for(
        value, max_chunk_size(ctx.settings.max_data_size), request_id=request.request_id
    )
