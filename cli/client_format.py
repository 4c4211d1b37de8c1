"""How `pt client` shows things: tables for people, JSON documents for scripts.

Money in tables has thousands separators and two decimals (``12,345.60``);
prices keep their significant decimals (``0.0045``). JSON documents carry
decimals as strings and times as ISO 8601, never floats.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from papertrader.client.models import Bar, Portfolio, Trade
    from papertrader.market.quote import Quote

CENTS = Decimal("0.01")


def text(value: Any) -> Any:
    """A JSON-ready copy: decimals as strings, times as ISO 8601, ids as text."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {key: text(item) for key, item in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):  # the client's records
        return {f.name: text(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [text(item) for item in value]
    return value


def document(fields: dict[str, Any]) -> dict[str, Any]:
    """``text`` of a JSON object, typed as one (what ``--json`` commands print)."""
    return {key: text(item) for key, item in fields.items()}


def when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def money(amount: Decimal | None) -> str:
    """Cents, with thousands separators: ``12,345.60``."""
    if amount is None:
        return "-"
    return f"{amount.quantize(CENTS, rounding=ROUND_HALF_EVEN):,}"


def price(value: Decimal | None) -> str:
    """Prices keep their significant decimals but at least two, with thousands separators."""
    if value is None:
        return "-"
    normal = value.normalize()
    exponent = normal.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -2:
        normal = normal.quantize(CENTS)
    return f"{normal:,f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
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
        "open": text(quote.open),
        "high": text(quote.high),
        "low": text(quote.low),
        "close": text(quote.close),
        "volume": quote.volume,
        "time": text(quote.time),
    }


def portfolio_document(portfolio: Portfolio) -> dict[str, Any]:
    """The owner's fields (P&L, reservations) only in the owner's portfolio."""
    own = portfolio.own
    positions = [
        {
            "symbol": p.symbol,
            "quantity": p.quantity,
            "average_price": text(p.average_price),
            "price": text(p.price),
            "market_value": text(p.market_value),
            **({key: text(getattr(p, key)) for key in OWN_POSITION_FIELDS} if own else {}),
        }
        for p in portfolio.positions
    ]
    return {
        "username": portfolio.username,
        "cash": text(portfolio.cash),
        "positions": positions,
        "total_value": text(portfolio.total_value),
        **({key: text(getattr(portfolio, key)) for key in OWN_ACCOUNT_FIELDS} if own else {}),
    }


#: What the owner's portfolio adds (profit and loss, reservations; issue 13).
OWN_POSITION_FIELDS = (
    "cost_basis",
    "reserved_quantity",
    "unrealized_pnl",
    "unrealized_pnl_percent",
)
OWN_ACCOUNT_FIELDS = (
    "reserved_cash",
    "available_cash",
    "equity",
    "realized_pnl",
    "unrealized_pnl",
    "day_change",
    "day_change_percent",
)


def signed(amount: Decimal | None) -> str:
    """Money with its sign: +12.50, -3.00."""
    if amount is None:
        return "-"
    return ("+" if amount > 0 else "") + money(amount)


def percent(value: Decimal | None) -> str:
    return "-" if value is None else f"{'+' if value > 0 else ''}{value}%"


def history_document(history: list[Trade]) -> list[dict[str, Any]]:
    return [
        {
            "order_id": text(row.order_id),
            "side": row.side,
            "symbol": row.symbol,
            "quantity": row.quantity,
            "price": text(row.price),
            "executed_at": text(row.executed_at),
        }
        for row in history
    ]


def bars_document(symbol: str, range_: str, bars: Sequence[Bar]) -> dict[str, Any]:
    return {"symbol": symbol, "range": range_, "bars": [text(bar) for bar in bars]}


def quantity(units: Any) -> str:
    """Units with thousands separators."""
    return "-" if units is None else f"{int(units):,}"
