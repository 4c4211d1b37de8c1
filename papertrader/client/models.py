"""What the client library hands back: small frozen records, money as Decimal."""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

Side = Literal["buy", "sell"]


@dataclass(frozen=True)
class SessionInfo:
    """A session the worker gave us; the id is a secret (never print or log it whole)."""

    session_id: uuid.UUID
    expires_at: datetime
    username: str


@dataclass(frozen=True)
class Fill:
    """An order that went through, at the price of the interval it was applied in."""

    order_id: uuid.UUID
    side: Side
    symbol: str
    quantity: int
    price: Decimal
    executed_at: datetime


@dataclass(frozen=True)
class EquityPoint:
    """The account's value at one moment: cash plus positions at that interval's prices."""

    at: datetime
    equity: Decimal
    cash: Decimal


@dataclass(frozen=True)
class OrderStatus:
    """An order's state, as the master knows it (docs/PROTOCOL.md, section 13.4).

    ``status`` is queued (in the stream, before its drain), open (waiting in the
    book), filled, rejected (``code``/``reason`` say why), canceled or expired;
    each change has its time. ``price``/``amount``/``executed_at`` describe the
    fill. An order is known to users by ``client_order_id`` (theirs);
    ``order_id`` is the one the history shows.
    """

    order_id: uuid.UUID
    client_order_id: uuid.UUID
    status: str
    side: Side
    symbol: str
    quantity: int
    order_type: str = "market"
    time_in_force: str = "day"
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    code: int = 0
    reason: str = ""
    price: Decimal | None = None
    amount: Decimal | None = None
    realized_pnl: Decimal | None = None
    reserved_cash: Decimal = Decimal("0")
    reserved_quantity: int = 0
    received_at: datetime | None = None
    accepted_at: datetime | None = None
    triggered_at: datetime | None = None
    decided_at: datetime | None = None
    executed_at: datetime | None = None
    expires_at: datetime | None = None

    @property
    def is_open(self) -> bool:
        """Still waiting: queued or in the book (it can be canceled)."""
        return self.status in ("queued", "open")

    @property
    def fill(self) -> Fill | None:
        """The fill of a filled order."""
        if self.status != "filled" or self.price is None or self.executed_at is None:
            return None
        return Fill(
            self.order_id, self.side, self.symbol, self.quantity, self.price, self.executed_at
        )

    @classmethod
    def from_record(cls, fields: dict[str, Any]) -> OrderStatus:
        """From a decoded order record; fields added later are ignored, missing ones default."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {name: value for name, value in fields.items() if name in known}
        values.setdefault("client_order_id", values.get("order_id"))
        for name in ("reserved_cash",):
            if values.get(name) is None:
                values[name] = Decimal("0")
        if values.get("reserved_quantity") is None:
            values["reserved_quantity"] = 0
        if values.get("reason") is None:
            values["reason"] = ""
        return cls(**values)
