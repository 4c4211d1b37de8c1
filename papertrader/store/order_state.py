"""What became of an order: one record, the same wherever it is read.

The drain publishes it (as JSON) to the worker waiting on the order; the master
answers order status, order lists and cancels with it (from PostgreSQL); the
worker turns it into the ORDER_STATUS return and the record of
docs/PROTOCOL.md. Money and prices are Decimal, and strings in JSON: nothing
on the way may turn them into floats.

States: ``queued`` (in the order stream, not yet drained: only the master's
intake knows it), ``open`` (in the book: a limit or stop order waiting for its
price), ``filled``, ``rejected`` (with the reason), ``canceled``, ``expired``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Literal

Status = Literal["queued", "open", "filled", "rejected", "canceled", "expired"]
STATUSES: tuple[Status, ...] = ("queued", "open", "filled", "rejected", "canceled", "expired")
#: The states an order never leaves.
FINAL_STATUSES = frozenset({"filled", "rejected", "canceled", "expired"})
OrderType = Literal["market", "limit", "stop", "stop_limit"]
ORDER_TYPES: tuple[OrderType, ...] = ("market", "limit", "stop", "stop_limit")
TimeInForce = Literal["day", "gtc"]
TIMES_IN_FORCE: tuple[TimeInForce, ...] = ("day", "gtc")

#: The namespace of order ids (docs/PROTOCOL.md, section 13.1).
ORDER_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://papertrader.invalid/order")


def order_id_for(account_id: int, client_order_id: uuid.UUID) -> uuid.UUID:
    """The order id of a client order id: the same for every worker that sees it.

    Exactly-once rests on this: two workers given the same client order id for
    the same account queue the same order id, and the master applies an order
    id once (the primary key of ``orders``).
    """
    return uuid.uuid5(ORDER_NAMESPACE, f"{account_id}:{client_order_id}")


_DECIMALS = ("limit_price", "stop_price", "price", "amount", "realized_pnl", "reserved_cash")
_TIMES = ("received_at", "accepted_at", "triggered_at", "decided_at", "executed_at", "expires_at")


def _uuid(value: Any) -> uuid.UUID:
    return uuid.UUID(str(value))


def _decimal(value: Any) -> Decimal:
    return Decimal(str(value))


def _time(value: Any) -> datetime:
    return datetime.fromisoformat(str(value))


#: How ``OrderState.from_mapping`` reads each JSON value that is not kept as it is.
_CONVERT: dict[str, Callable[[Any], Any]] = {
    "order_id": _uuid,
    "client_order_id": _uuid,
    **{name: _decimal for name in _DECIMALS},
    **{name: _time for name in _TIMES},
    "code": int,
    "quantity": int,
    "reserved_quantity": int,
}


@dataclass(frozen=True)
class OrderState:
    """An order's terms and its state now; the positional fields are the original
    outcome's (``Outcome`` in ``order_queue``), the rest default for orders and
    answers that predate them."""

    order_id: uuid.UUID
    status: str
    code: int  # 0, or the ErrorCode of a rejection
    reason: str
    side: str
    symbol: str
    quantity: int
    price: Decimal | None  # the fill price
    executed_at: datetime | None  # when it filled
    client_order_id: uuid.UUID | None = None
    order_type: str = "market"
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    time_in_force: str = "day"
    amount: Decimal | None = None  # quantity x price, in cents
    realized_pnl: Decimal | None = None  # a sell's profit or loss against the average cost
    reserved_cash: Decimal = Decimal("0")  # held while open (a buy)
    reserved_quantity: int = 0  # held while open (a sell)
    received_at: datetime | None = None  # the worker's stamp
    accepted_at: datetime | None = None  # the drain took it
    triggered_at: datetime | None = None  # a stop order's stop price was reached
    decided_at: datetime | None = None  # filled, rejected, canceled or expired
    expires_at: datetime | None = None  # a day order's end
    #: The master had decided this order id before (a retry, a duplicate, a replay).
    replayed: bool = False

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    def to_json(self) -> str:
        """The JSON text published for the waiting worker (``from_json`` reads it)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, uuid.UUID):
                value = value.hex
            elif isinstance(value, Decimal):
                value = str(value)
            elif isinstance(value, datetime):
                value = value.isoformat()
            out[f.name] = value
        return json.dumps(out)

    @classmethod
    def from_json(cls, text: str | bytes) -> OrderState:
        """Read ``to_json``'s text, or the master's; keys it lacks keep their defaults."""
        data: dict[str, Any] = json.loads(text)
        return cls.from_mapping(data)

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> OrderState:
        """An order state from its JSON mapping: known keys converted (``_CONVERT``),
        unknown ones ignored. A worker reads one per order it answers, so this walks
        the mapping once rather than the dataclass's fields."""
        values: dict[str, Any] = {}
        for name, value in data.items():
            if name not in _FIELD_NAMES:
                continue
            convert = _CONVERT.get(name)
            values[name] = value if value is None or convert is None else convert(value)
        for name in ("price", "executed_at"):
            values.setdefault(name, None)
        if values.get("reserved_cash") is None:
            values["reserved_cash"] = Decimal("0")
        if values.get("reserved_quantity") is None:
            values["reserved_quantity"] = 0
        return cls(**values)

    def as_record(self) -> dict[str, Any]:
        """The order as a protocol record (docs/PROTOCOL.md, section 13.4)."""
        record = {
            "order_id": self.order_id,
            "client_order_id": self.client_order_id or self.order_id,
            "status": self.status,
            "code": self.code,
            "reason": self.reason,
            "side": self.side,
            "symbol": self.symbol,
            "quantity": self.quantity,
            "order_type": self.order_type,
            "limit_price": self.limit_price,
            "stop_price": self.stop_price,
            "time_in_force": self.time_in_force,
            "price": self.price,
            "amount": self.amount,
            "realized_pnl": self.realized_pnl,
            "reserved_cash": self.reserved_cash,
            "reserved_quantity": self.reserved_quantity,
            "received_at": self.received_at,
            "accepted_at": self.accepted_at,
            "triggered_at": self.triggered_at,
            "decided_at": self.decided_at,
            "executed_at": self.executed_at,
            "expires_at": self.expires_at,
        }
        for name, value in record.items():  # a stamp without a zone is UTC
            if isinstance(value, datetime) and value.tzinfo is None:
                record[name] = value.replace(tzinfo=timezone.utc)
        return record


#: The names ``OrderState.from_mapping`` takes from a mapping.
_FIELD_NAMES = frozenset(field.name for field in fields(OrderState))
