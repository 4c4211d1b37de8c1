"""What the client library hands back: small frozen records, money as Decimal."""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from papertrader.market.quote import Quote

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


def _known_fields(cls: type, fields: dict[str, Any]) -> dict[str, Any]:
    """The fields of a record a dataclass knows (later versions may add others); a
    record's ``return`` is the dataclass's ``return_`` (a Python keyword)."""
    known = {f.name for f in dataclasses.fields(cls)}
    renamed = {("return_" if name == "return" else name): value for name, value in fields.items()}
    return {name: value for name, value in renamed.items() if name in known}


@dataclass(frozen=True)
class CompetitionPosition:
    """One position of a competition account, at the master's current price."""

    symbol: str
    quantity: int
    average_price: Decimal
    price: Decimal | None  # None: the master has no price for it (valued at cost)
    market_value: Decimal


@dataclass(frozen=True)
class CompetitionAccount:
    """Your own account in a competition you joined (docs/PROTOCOL.md section 16)."""

    rank: int
    cash: Decimal
    equity: Decimal
    gain: Decimal
    return_: Decimal  # a fraction: 0.05 is +5 %
    return_percent: Decimal
    positions: tuple[CompetitionPosition, ...] = ()


@dataclass(frozen=True)
class Competition:
    """A competition: its terms, and whether you are in it.

    ``symbols`` is empty when every asset may be traded; ``join_code`` is set only
    for its creator (the code the members of a private competition join with).
    """

    name: str
    status: str  # upcoming, running or ended
    starts_at: datetime
    ends_at: datetime
    starting_cash: Decimal
    symbols: tuple[str, ...] = ()
    private: bool = False
    join_code: str | None = None
    members: int = 0
    joined: bool = False
    created_by: str = ""
    account: CompetitionAccount | None = None

    @classmethod
    def from_record(cls, fields: dict[str, Any]) -> Competition:
        values = _known_fields(cls, fields)
        values["symbols"] = tuple(values.get("symbols") or ())
        values["created_by"] = values.get("created_by") or ""
        account = values.get("account")
        if account is not None:
            held = tuple(
                CompetitionPosition(**_known_fields(CompetitionPosition, p))
                for p in account.get("positions") or ()
            )
            values["account"] = CompetitionAccount(
                **{**_known_fields(CompetitionAccount, account), "positions": held}
            )
        return cls(**values)


@dataclass(frozen=True)
class LeaderboardEntry:
    """One member's place: ranked by return; equal equity shares a rank."""

    rank: int
    username: str
    equity: Decimal
    gain: Decimal  # equity - starting cash
    return_: Decimal  # gain / starting cash, a fraction rounded to 8 places
    return_percent: Decimal

    @classmethod
    def from_record(cls, fields: dict[str, Any]) -> LeaderboardEntry:
        return cls(**_known_fields(cls, fields))


@dataclass(frozen=True)
class Leaderboard:
    competition: str
    status: str
    starting_cash: Decimal
    members: int
    priced_at: datetime | None
    your_rank: int | None
    entries: tuple[LeaderboardEntry, ...]


@dataclass(frozen=True)
class Position:
    """One holding, valued at the master's current price (``price`` None: no price yet).

    The owner also gets what it cost and its unrealised profit or loss; for
    another user's public profile those fields are None.
    """

    symbol: str
    quantity: int
    price: Decimal | None = None
    market_value: Decimal | None = None
    average_price: Decimal | None = None
    cost_basis: Decimal | None = None
    reserved_quantity: int | None = None  # held by open sell orders
    unrealized_pnl: Decimal | None = None
    unrealized_pnl_percent: Decimal | None = None


@dataclass(frozen=True)
class Portfolio:
    """Positions and money (docs/PROTOCOL.md 13.8). Another user's public portfolio
    carries ``username`` and ``positions`` only (``own`` False): the rest is None."""

    username: str
    positions: tuple[Position, ...] = ()
    cash: Decimal | None = None
    total_value: Decimal | None = None
    equity: Decimal | None = None
    reserved_cash: Decimal | None = None
    available_cash: Decimal | None = None
    realized_pnl: Decimal | None = None
    unrealized_pnl: Decimal | None = None
    day_change: Decimal | None = None
    day_change_percent: Decimal | None = None
    priced_at: datetime | None = None

    @property
    def own(self) -> bool:
        """The signed-in user's own portfolio (cash and P&L are there)."""
        return self.cash is not None

    @classmethod
    def from_record(cls, fields: dict[str, Any], positions: list[dict[str, Any]]) -> Portfolio:
        values = _known_fields(cls, fields)
        values["positions"] = tuple(Position(**_known_fields(Position, p)) for p in positions)
        return cls(**values)


@dataclass(frozen=True)
class Trade:
    """One executed order of the history, oldest first. ``order_id``, ``amount`` and
    ``received_at`` are the owner's only (None in another user's public history)."""

    side: Side
    symbol: str
    quantity: int
    price: Decimal
    executed_at: datetime
    order_id: uuid.UUID | None = None
    amount: Decimal | None = None
    received_at: datetime | None = None

    @classmethod
    def from_record(cls, fields: dict[str, Any]) -> Trade:
        return cls(**_known_fields(cls, fields))


@dataclass(frozen=True)
class UserInfo:
    """An account's details: the owner's (e-mail, cash, visibility) or the public part."""

    username: str
    created_at: datetime | None = None
    email: str | None = None
    is_password: bool | None = None
    cash: Decimal | None = None
    public_profile: bool | None = None

    @classmethod
    def from_record(cls, fields: dict[str, Any]) -> UserInfo:
        return cls(**_known_fields(cls, fields))


@dataclass(frozen=True)
class AssetInfo:
    """What a worker knows of an asset: its current quote (None before the first update),
    when its prices were last updated, and whether they are stale (the master kept the
    last good prices while its provider failed)."""

    symbol: str
    currency: str
    quote: Quote | None = None
    name: str | None = None
    updated_at: datetime | None = None
    stale: bool = False

    @classmethod
    def from_record(cls, fields: dict[str, Any]) -> AssetInfo:
        values = _known_fields(cls, fields)
        values["stale"] = bool(values.get("stale"))
        return cls(**values)


@dataclass(frozen=True)
class ForecastPoint:
    step: int  # update intervals ahead
    time: datetime  # the start of that interval
    value: Decimal
    lower: Decimal  # the 95 % band
    upper: Decimal


@dataclass(frozen=True)
class Forecast:
    """A naive Holt forecast of an asset's price: practice, not advice."""

    symbol: str
    method: str
    horizon: int
    last_close: Decimal
    last_time: datetime
    points: tuple[ForecastPoint, ...] = ()
    step_seconds: Decimal | None = None
    alpha: Decimal | None = None
    beta: Decimal | None = None
    sigma: Decimal | None = None
    based_on: int = 0
    note: str = ""

    @classmethod
    def from_record(cls, fields: dict[str, Any], points: list[dict[str, Any]]) -> Forecast:
        values = _known_fields(cls, fields)
        values["points"] = tuple(ForecastPoint(**_known_fields(ForecastPoint, p)) for p in points)
        values["note"] = values.get("note") or ""
        return cls(**values)


@dataclass(frozen=True)
class AccountSession:
    """One live session of the account (``current``: the one asking)."""

    handle: str
    current: bool
    created_at: datetime | None = None
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    last_ip: str | None = None
    login_ip: str | None = None
    remember: bool = False

    @classmethod
    def from_record(cls, fields: dict[str, Any]) -> AccountSession:
        values = _known_fields(cls, fields)
        values["remember"] = bool(values.get("remember"))
        return cls(**values)


@dataclass(frozen=True)
class LinkedProvider:
    name: str
    display_name: str | None = None
    email: str | None = None
    linked_at: datetime | None = None
    last_login_at: datetime | None = None


@dataclass(frozen=True)
class SignInMethods:
    """How the account signs in: a password or not, and its linked providers."""

    username: str
    email: str
    email_verified: bool
    has_password: bool
    providers: tuple[LinkedProvider, ...] = ()

    @classmethod
    def from_record(cls, fields: dict[str, Any], providers: list[dict[str, Any]]) -> SignInMethods:
        values = _known_fields(cls, fields)
        values["providers"] = tuple(
            LinkedProvider(**_known_fields(LinkedProvider, p)) for p in providers
        )
        values["email_verified"] = bool(values.get("email_verified"))
        values["has_password"] = bool(values.get("has_password"))
        return cls(**values)


@dataclass(frozen=True)
class Bar:
    """One bar of an asset's price history (a minute, a day or a month)."""

    period_start: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: int

    @classmethod
    def from_record(cls, fields: dict[str, Any]) -> Bar:
        return cls(**_known_fields(cls, fields))
